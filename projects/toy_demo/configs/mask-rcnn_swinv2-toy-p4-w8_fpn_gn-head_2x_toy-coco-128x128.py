"""The toy demo: a scaled-down SwinV2 Mask R-CNN trained from scratch on CPU.

Inherits ``configs/detection/mask-rcnn_swinv2-t-p4-w16_fpn_1x_coco.py`` (detector, losses,
AdamW with the no-decay keys, hooks) and changes what a 2-core CPU and the 128x128 toy shapes (``projects.toy_demo.toy_coco``,
written to data/toy_coco/ by ``projects/toy_demo/demo_detection.py``) need:
* data: 5 shape classes, 128x128 images, flips as the only augmentation;
* model width / depth: a narrow, shallow SwinV2 (48-384 channels, window 8, random init),
  64-channel FPN and heads, RPN anchors of 16 px at stride 4 (toy objects are 12-64 px),
  2 mask-head convs, fewer sampled proposals / RoIs (64 per image);
* normalisation for training from scratch: GroupNorm in the FPN and the heads, with the
  4-conv box head that carries it (see below);
* cost per iteration: one RoIAlign sample per bin (toy RoIs span 2-16 cells of the stride-4
  map, fewer than the 7x7 / 14x14 bins, so more samples add nothing), 300 RPN boxes per
  level into the training NMS, fused AdamW: 0.33 -> 0.25 s per batch of 4;
* schedule: batch 2 (more updates for the same images: a randomly initialised SwinV2
  learns per step, not per image), 24 epochs of 200 iterations, lr 2e-3 (no pre-training
  to protect) with cosine decay, validation every 8 epochs logged by iteration for the plot.
Run it with ``make demo``.
"""
_base_ = ['../../../configs/detection/mask-rcnn_swinv2-t-p4-w16_fpn_1x_coco.py']

classes = ('circle', 'square', 'triangle', 'star', 'cross')  # projects.toy_demo.toy_coco.CLASSES
metainfo = dict(classes=classes,
                palette=[(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48),
                         (145, 30, 180)])
data_root = 'data/toy_coco/'
image_size = (128, 128)
embed_dims = 48
max_epochs = 24
val_interval = 8

# Training from random initialisation needs normalised heads (He et al., "Rethinking
# ImageNet Pre-training", and mmdet's configs/scratch): GroupNorm in the FPN, a 4-conv
# box head and the mask head. Measured on the toy data after 800 iterations: 0.110 / 0.135
# bbox / segm mAP with GN heads against 0.056 / 0.051 with mmdet's plain heads.
norm_cfg = dict(type='GN', num_groups=16, requires_grad=True)
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=embed_dims, depths=[2, 2, 2, 2],
                  num_heads=[3, 6, 12, 24]),
        window_size=8,
        pretrained_window_size=0,
        drop_path_rate=0.1,
        init_cfg=None),
    neck=dict(in_channels=[embed_dims * 2**i for i in range(4)], out_channels=64,
              norm_cfg=norm_cfg),
    rpn_head=dict(in_channels=64, feat_channels=64, anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64, roi_layer=dict(sampling_ratio=1)),
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', in_channels=64, conv_out_channels=64,
                       fc_out_channels=256, norm_cfg=norm_cfg, num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=64, roi_layer=dict(sampling_ratio=1)),
        mask_head=dict(num_convs=2, in_channels=64, conv_out_channels=64, norm_cfg=norm_cfg,
                       num_classes=len(classes))),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=300, max_per_img=300),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300), rcnn=dict(max_per_img=50)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,  # the pipeline takes ~5 ms per image; a worker would only compete
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=0), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,  # the pipeline takes ~5 ms per image; a worker would only compete
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val.json', data_prefix=dict(img='val/'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=max_epochs, val_interval=val_interval)
optim_wrapper = dict(optimizer=dict(lr=2e-3, fused=True))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=200),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=1e-5, by_epoch=True, begin=0,
         end=max_epochs, convert_to_iter_based=True),
]
default_hooks = dict(
    logger=dict(interval=20, log_metric_by_epoch=False),
    checkpoint=dict(interval=val_interval, max_keep_ckpts=2))
log_processor = dict(window_size=20)
randomness = dict(seed=0)
auto_scale_lr = dict(base_batch_size=2)
