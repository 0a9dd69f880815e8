"""Multi-scale + flip testing for ``upernet_swinv1-t-p4-w7_8xb2-160k_ade20k-512x512.py``
(mmseg: 45.79 mIoU).

Same TTA as ``upernet_swinv2-t-p4-w16_8xb2-160k_ade20k-512x512_ms-flip-tta.py``: six scales x
{no flip, flip}, averaged by mmseg's ``SegTTAModel``. Test only: ``python tools/test.py
configs/segmentation/upernet_swinv1-t-p4-w7_8xb2-160k_ade20k-512x512_ms-flip-tta.py CHECKPOINT``.
"""
_base_ = ['./upernet_swinv1-t-p4-w7_8xb2-160k_ade20k-512x512.py']

model = dict(_delete_=True, type='SegTTAModel', module={{_base_.model}})
test_dataloader = dict(batch_size=1, dataset=dict(pipeline={{_base_.tta_pipeline}}))
