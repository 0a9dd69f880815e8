"""SwinV2-T + UPerNet (+ auxiliary FCN head) on ADE20K 512x512, 160k iterations.

Differs from MMSegmentation's Swin-T recipe (its base below, 44.41 mIoU) only in the
backbone: SwinV2-T from the official ImageNet-1K weights (window 8 at 256x256),
fine-tuned with window 16 as in the SwinV2 paper's ADE20K ablation (arXiv 2111.09883,
Appendix A1); the log-spaced CPB re-targets the pre-trained window 8 to 16. Optimiser
(AdamW lr 6e-5, wd 0.01, 1500 linear warm-up iterations then poly), drop-path 0.3,
crop 512x512 and batch 8 GPUs x 2 images are the base's. No code base publishes
this combination; the paper reports 47.0 mIoU with extra layer-wise lr decay 0.95.

Train: ``python tools/train.py configs/upernet_swin_t.py`` (the short entry point inheriting
this file); multi-scale + flip test: ``upernet_swinv2-t-p4-w16_8xb2-160k_ade20k-512x512_ms-flip-
tta.py`` beside it. See docs/segmentation.md.
"""
_base_ = [
    'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
    '../_base_/swin_no_decay.py',
]

custom_imports = dict(imports=['swin_backbone'], allow_failed_imports=False)

checkpoint = ('https://github.com/SwinTransformer/storage/releases/download/v2.0.0/'
              'swinv2_tiny_patch4_window8_256.pth')
model = dict(
    backbone=dict(
        _delete_=True,
        type='swin_backbone.SwinTransformerV2',
        arch='tiny',
        window_size=16,
        pretrained_window_size=8,
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))

# `_delete_` drops the base's list, which names `absolute_pos_embed` (ours has none).
optim_wrapper = dict(paramwise_cfg=dict(_delete_=True, custom_keys={{_base_.swin_no_decay_keys}}))
