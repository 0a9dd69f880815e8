# MMDetection's published Swin-T Mask R-CNN recipe (configs/swin/
# mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py: 42.7 box / 39.3 mask AP) with this package's V1
# backbone and the official ImageNet-1K weights: window 7, drop-path 0.2, AdamW 1e-4,
# single-scale 1333x800, 12 epochs. Only the backbone differs from
# mask-rcnn_swinv2-t-p4-w16_fpn_1x_coco.py.
_base_ = './mask-rcnn_swinv2-t-p4-w16_fpn_1x_coco.py'

pretrained = ('https://github.com/SwinTransformer/storage/releases/download/v1.0.0/'
              'swin_tiny_patch4_window7_224.pth')
model = dict(
    backbone=dict(
        _delete_=True,
        type='swin_backbone.SwinTransformer',
        arch='tiny',
        window_size=7,
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
