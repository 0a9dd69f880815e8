# The Swin detection / segmentation optimiser, stated once: AdamW (lr 1e-4, wd 0.05),
# 1000-iteration linear warm-up, and no weight decay on the parameters that the Swin
# papers exempt: every LayerNorm (`norm` matches patch_embed.norm, blocks' norm1 / norm2,
# downsample.norm and the output norm0..3), the V1 relative-position bias table, and the
# V2 cosine-attention `logit_scale` and log-spaced continuous position bias MLP `cpb_mlp`
# (SwinV2, arXiv 2111.09883, Sec. 3.2-3.3; official `no_weight_decay_keywords`).
# custom_keys match by substring of the full parameter name; tests/test_configs.py checks
# that each key matches real parameters of the models built from configs/.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                   weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'norm': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'logit_scale': dict(decay_mult=0.),
        'cpb_mlp': dict(decay_mult=0.),
    }))
