"""The toy demo: a scaled-down SwinV2 + UPerNet trained from scratch on CPU.

Inherits ``configs/segmentation/upernet_swinv2-t-p4-w16_8xb2-160k_ade20k-512x512.py`` (model
type, heads, no-decay keys, hooks) and changes what a 2-core CPU and the toy set of ``projects.toy_demo.toy_segmentation`` need: a narrow, shallow
SwinV2 (32-256 channels, window 8, random init, no drop-path), narrow heads, 6 classes
(background is ADE20K's 'other', label 0, ignored), cross-entropy plus a Lovasz-softmax
term in the decode head, training at the images' own scale (0.75-1.25x, 128x128 crops,
flip; no PhotoMetricDistortion: colours are random already), validation one image per
batch at its own size (no resize: IoU is counted on the annotated pixels as they are,
and any ADE20K-layout folder with images of different sizes validates), and a short
schedule: batch 4, AdamW lr 2e-3 (fused), 100 warm-up iterations, then poly.
What was measured on the way: docs/segmentation.md. Run it with ``make demo-seg``.
"""
_base_ = ['../../../configs/segmentation/upernet_swinv2-t-p4-w16_8xb2-160k_ade20k-512x512.py']

# Class names and colours of projects.toy_demo.toy_segmentation (a test checks they agree).
classes = ('stripes', 'checker', 'circle', 'square', 'triangle', 'star')
palette = [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
           [255, 225, 25]]
data_root = 'data/toy_seg'
crop_size = (128, 128)
max_iters = 1600
val_interval = 400

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8]),
        window_size=8,
        pretrained_window_size=0,
        drop_path_rate=0.0,
        init_cfg=None),
    decode_head=dict(
        in_channels=[32, 64, 128, 256],
        channels=64,
        num_classes=len(classes),
        loss_decode=[dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                     dict(type='LovaszLoss', reduction='none', loss_weight=1.0)]),
    auxiliary_head=dict(in_channels=128, channels=32, num_classes=len(classes)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    # at the images' own scale, jittered by 0.75-1.25x: objects keep their pixel size
    dict(type='RandomChoice', transforms=[
        [dict(type='Resize', scale_factor=f, keep_ratio=True)]
        for f in (0.75, 0.875, 1.0, 1.125, 1.25)]),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
toy_dataset = dict(
    type='BaseSegDataset',  # ADE20KDataset would insist on ADE's 150 class names
    data_root=data_root,
    metainfo=dict(classes=classes, palette=palette),
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        _delete_=True,
        **toy_dataset,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,  # images differ in size: one per batch, each scored at its own size
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        _delete_=True,
        **toy_dataset,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=2e-3, weight_decay=0.01, fused=True))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=100),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=100, end=max_iters, by_epoch=False),
]
train_cfg = dict(max_iters=max_iters, val_interval=val_interval)
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=2),
    visualization=dict(interval=4))  # with --show-dir: every 4th val image
randomness = dict(seed=0)
