# MMDetection's published Swin-T 3x multi-scale-crop recipe (46.0 box / 41.6 mask AP) with
# this package's V1 backbone and the official weights: the V2 3x config with the backbone
# of mask-rcnn_swinv1-t-p4-w7_fpn_1x_coco.py.
_base_ = './mask-rcnn_swinv2-t-p4-w16_fpn_ms-crop-3x_coco.py'

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
