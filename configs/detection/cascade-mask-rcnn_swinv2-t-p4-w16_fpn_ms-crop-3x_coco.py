# Cascade Mask R-CNN + FPN, SwinV2-T (window 16), 3x multi-scale + crop, COCO 2017: the
# SwinV2 paper's COCO ablation (arXiv 2111.09883, Table 1: 51.1 box AP with log-CPB;
# settings in Appendix A1). Reproduction notes, docs/recipes.md.
#
# Where each setting comes from. "Paper" = what Table 1 / Appendix A1 state as quoted in
# issue 9 (the appendix text itself could not be retrieved here); "mmdet Swin 3x" =
# MMDetection's configs/swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py; "Swin V1
# release" = the Swin authors' configs/swin/cascade_mask_rcnn_swin_tiny_patch4_window7_
# mstrain_480-800_giou_4conv1f_adamw_3x_coco.py (SwinTransformer/Swin-Transformer-Object-
# Detection), the Cascade recipe behind Swin V1's numbers.
# * framework: Cascade Mask R-CNN in MMDetection ............................... paper
# * SwinV2-T, ImageNet-1K weights at 256 / window 8, fine-tuned at window 16 ... paper
#   (inherited: mask-rcnn_swinv2-t-p4-w16_fpn_ms-crop-3x_coco.py ->
#   mask-rcnn_swinv2-t-p4-w16_fpn_1x_coco.py)
# * 3x schedule (36 epochs, lr x0.1 at 27 and 33) .................. paper (3x); steps:
#   mmdet Swin 3x / Swin V1 release (inherited)
# * multi-scale training, shorter side 480-800, long side <= 1333, plus the
#   DETR-style random crop branch ...................... paper (480-800); crop: mmdet Swin
#   3x / Swin V1 release (inherited)
# * AdamW lr 1e-4, wd 0.05, betas (0.9, 0.999), 1000-iteration linear warm-up, batch 16
#   (8 GPUs x 2) ................................. mmdet Swin 3x / Swin V1 release (inherited)
# * no weight decay on norms, relative-position tables, logit_scale, cpb_mlp ... ours,
#   from the official SwinV2 skip list (inherited: _base_/schedules/swin_adamw_1x.py)
# * drop-path 0.2 ..................................... Swin V1 release for Swin-T (inherited)
# * bbox heads: 4 shared convs (SyncBN) + 1 fc, GIoU loss (weight 10) on decoded boxes,
#   class-specific regression ............................. Swin V1 release (set below)
# * no layer-wise lr decay (the paper names it for ADE20K only) ..................... ours
_base_ = './mask-rcnn_swinv2-t-p4-w16_fpn_ms-crop-3x_coco.py'

_stage_stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]]
_stage_ious = [0.5, 0.6, 0.7]
model = dict(
    type='CascadeRCNN',
    roi_head=dict(
        type='CascadeRoIHead',
        num_stages=3,
        stage_loss_weights=[1, 0.5, 0.25],
        bbox_head=[
            dict(type='ConvFCBBoxHead', num_shared_convs=4, num_shared_fcs=1, in_channels=256,
                 conv_out_channels=256, fc_out_channels=1024, roi_feat_size=7, num_classes=80,
                 bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                                 target_stds=stds),
                 reg_class_agnostic=False, reg_decoded_bbox=True,
                 norm_cfg=dict(type='SyncBN', requires_grad=True),
                 loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                 loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
            for stds in _stage_stds]),
    # mmdet's cascade-mask-rcnn_r50_fpn.py: one IoU threshold per stage
    train_cfg=dict(rcnn=[
        dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou,
                           min_pos_iou=iou, match_low_quality=False, ignore_iof_thr=-1),
             sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1,
                          add_gt_as_proposals=True),
             mask_size=28, pos_weight=-1, debug=False)
        for iou in _stage_ious]))
