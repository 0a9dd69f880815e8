# SwinV2-B variant of cascade-mask-rcnn_swinv2-t-p4-w16_fpn_ms-crop-3x_coco.py: only the
# arch, the drop-path rate and the checkpoint change (plus the FPN input widths that
# follow from the arch: embed_dims 128). No published SwinV2-B number for this recipe.
# * official ImageNet-1K SwinV2-B (window 8, 256x256) weights ........ SwinV2 release
# * drop-path 0.3: the Swin V1 authors' Cascade Swin-B release ................ ours
_base_ = './cascade-mask-rcnn_swinv2-t-p4-w16_fpn_ms-crop-3x_coco.py'

pretrained = ('https://github.com/SwinTransformer/storage/releases/download/v2.0.0/'
              'swinv2_base_patch4_window8_256.pth')
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
