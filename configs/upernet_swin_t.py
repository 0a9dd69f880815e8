# Short entry point: UPerNet, SwinV2-T (window 16), 160k, ADE20K 512x512 (configs/README.md).
_base_ = './segmentation/upernet_swinv2-t-p4-w16_8xb2-160k_ade20k-512x512.py'
