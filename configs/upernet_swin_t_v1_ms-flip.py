"""Multi-scale + flip testing for ``upernet_swin_t_v1.py`` (mmseg: 45.79 mIoU).

Same TTA as ``upernet_swin_t_ms-flip.py``: six scales x {no flip, flip}, averaged
by mmseg's ``SegTTAModel``. Test only: ``python tools/test.py
configs/upernet_swin_t_v1_ms-flip.py CHECKPOINT``.
"""
_base_ = ['./upernet_swin_t_v1.py']

model = dict(_delete_=True, type='SegTTAModel', module={{_base_.model}})
test_dataloader = dict(batch_size=1, dataset=dict(pipeline={{_base_.tta_pipeline}}))
