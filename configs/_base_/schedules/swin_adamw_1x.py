# The Swin detection / segmentation optimiser, stated once: AdamW (lr 1e-4, wd 0.05),
# 1000-iteration linear warm-up, and no weight decay on the parameters of
# configs/_base_/swin_no_decay.py.
_base_ = ['mmdet::_base_/schedules/schedule_1x.py', '../swin_no_decay.py']

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                   weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={{_base_.swin_no_decay_keys}}))
