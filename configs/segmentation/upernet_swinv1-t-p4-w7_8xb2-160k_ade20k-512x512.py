"""Swin-T (V1, window 7) + UPerNet on ADE20K 512x512, 160k: MMSegmentation's recipe.

Reproduces ``swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512``
(mmseg reports 44.41 mIoU single scale, 45.79 multi-scale + flip; the Swin paper
44.51 / 45.81) with our backbone and the official ImageNet-1K Swin-T weights, which
our loader converts (mmseg's own config needs a pre-converted copy). Everything else,
including the 8 GPUs x 2 images batch, is the base's. Multi-scale + flip test:
``configs/segmentation/upernet_swinv1-t-p4-w7_8xb2-160k_ade20k-512x512_ms-flip-tta.py``.
"""
_base_ = [
    'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
    '../_base_/swin_no_decay.py',
]

custom_imports = dict(imports=['swin_backbone'], allow_failed_imports=False)

checkpoint = ('https://github.com/SwinTransformer/storage/releases/download/v1.0.0/'
              'swin_tiny_patch4_window7_224.pth')
model = dict(
    backbone=dict(
        _delete_=True,
        type='swin_backbone.SwinTransformer',
        arch='tiny',
        window_size=7,
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))

# The detection configs' no-decay keys. The base's own are 'absolute_pos_embed' (our
# backbone has none), 'relative_position_bias_table' and 'norm'; 'logit_scale' and
# 'cpb_mlp' match nothing in V1.
# `_delete_` drops the base's list, which names `absolute_pos_embed` (ours has none).
optim_wrapper = dict(paramwise_cfg=dict(_delete_=True, custom_keys={{_base_.swin_no_decay_keys}}))
