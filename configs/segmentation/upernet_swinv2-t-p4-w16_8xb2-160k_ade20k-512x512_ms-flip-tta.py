"""Multi-scale + flip testing for ``upernet_swinv2-t-p4-w16_8xb2-160k_ade20k-512x512.py``:
mmseg's ADE20K TTA.

Scales 0.5, 0.75, 1.0, 1.25, 1.5, 1.75 of the image, each with and without a
horizontal flip, averaged by ``SegTTAModel`` (mmseg's ``tta_pipeline`` and
``tta_model``, inherited). Test only: ``python tools/test.py
configs/segmentation/upernet_swinv2-t-p4-w16_8xb2-160k_ade20k-512x512_ms-flip-tta.py
CHECKPOINT``; a checkpoint of the single-scale config loads into the wrapped model unchanged.
"""
_base_ = ['./upernet_swinv2-t-p4-w16_8xb2-160k_ade20k-512x512.py']

model = dict(_delete_=True, type='SegTTAModel', module={{_base_.model}})
test_dataloader = dict(batch_size=1, dataset=dict(pipeline={{_base_.tta_pipeline}}))
