# SwinV2-S variant of cascade-mask-rcnn_swinv2-t-p4-w16_fpn_ms-crop-3x_coco.py: only the
# arch, the drop-path rate and the checkpoint change. No published SwinV2-S number for this
# recipe (docs/recipes.md).
# * official ImageNet-1K SwinV2-S (window 8, 256x256) weights ........ SwinV2 release
# * drop-path 0.3: the Swin V1 authors' Cascade Swin-S release ................ ours
_base_ = './cascade-mask-rcnn_swinv2-t-p4-w16_fpn_ms-crop-3x_coco.py'

pretrained = ('https://github.com/SwinTransformer/storage/releases/download/v2.0.0/'
              'swinv2_small_patch4_window8_256.pth')
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
