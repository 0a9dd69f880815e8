# Short entry point: Mask R-CNN + FPN, SwinV2-T (window 16), 1x, COCO (configs/README.md).
_base_ = './detection/mask-rcnn_swinv2-t-p4-w16_fpn_1x_coco.py'
