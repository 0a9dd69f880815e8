# Mask R-CNN + FPN, SwinV2-T backbone, COCO 2017 (data/coco/), 1x schedule.
# The backbone was pre-trained on ImageNet-1K at 256x256 with window 8; detection uses
# window 16: log-spaced continuous position bias (SwinV2, Sec. 3.3) transfers the bias to
# the larger window, pretrained_window_size=8 tells it the scale the weights were learnt at.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/schedules/swin_adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['swin_backbone'], allow_failed_imports=False)

pretrained = ('https://github.com/SwinTransformer/storage/releases/download/v2.0.0/'
              'swinv2_tiny_patch4_window8_256.pth')
model = dict(
    backbone=dict(
        _delete_=True,
        type='swin_backbone.SwinTransformerV2',
        arch='tiny',
        window_size=16,
        pretrained_window_size=8,
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
