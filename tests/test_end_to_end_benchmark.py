"""The benchmark's end-to-end cases (tools/analysis_tools/end_to_end.py): what each timed call
computes, never how long it takes."""
from __future__ import annotations

import sys

import pytest
import torch

from paths import REPO
from swin_backbone import SwinTransformer, SwinTransformerV2

sys.path.insert(0, str(REPO / 'tools' / 'analysis_tools'))
import end_to_end  # noqa: E402

pytestmark = pytest.mark.slow


class _Named:
    def __init__(self, name: str, module: torch.nn.Module) -> None:
        self.name, self.module = name, module.eval()
        self.features = lambda x: list(module(x))


def _predictions_equal(a, b) -> None:
    for key in ('pred_instances', 'seg_logits'):
        if key in a:
            for field, value in a.get(key).items():
                torch.testing.assert_close(b.get(key).get(field), value, rtol=0, atol=0)


def test_slot_hands_float32_maps_to_the_heads_under_bf16() -> None:
    torch.manual_seed(0)
    backbone = _Named('ours V2', SwinTransformerV2(embed_dims=32, depths=(1, 1, 1, 1),
                                                   num_heads=(1, 2, 4, 8), window_size=4))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fp32 = end_to_end.BackboneSlot(backbone, bf16=False)(x)
        bf16 = end_to_end.BackboneSlot(backbone, bf16=True)(x)
    assert [m.dtype for m in bf16] == [torch.float32] * 4
    assert [m.shape[1:] for m in bf16] == [(32, 16, 16), (64, 8, 8), (128, 4, 4), (256, 2, 2)]
    for low, ref in zip(bf16, fp32):
        assert not torch.equal(low, ref)  # the backbone did run in bf16
        assert (low - ref).abs().max() < 0.2 * ref.std()


@pytest.mark.parametrize('task', ['mask_rcnn', 'upernet'])
def test_heads_only_replays_the_same_computation_without_the_backbone(task: str) -> None:
    torch.manual_seed(0)
    model = getattr(end_to_end, f'build_{task}')()
    batch = getattr(end_to_end, f'{task}_batch')()
    ours = _Named('ours V1', SwinTransformer(drop_path_rate=0.))
    fns = end_to_end.end_to_end_fns(model, batch, [ours], 'case', bf16=False)
    assert list(fns) == ['case + ours V1', 'case heads only']
    with_backbone, replayed = fns['case + ours V1'](), fns['case heads only']()
    assert isinstance(model.backbone, end_to_end.ReplayedMaps)
    if task == 'mask_rcnn':
        # score_thr 0: the mask head runs on its 100 detections even with random weights
        assert len(with_backbone[0].pred_instances) == 100
        assert with_backbone[0].pred_instances.masks.shape == (100, 800, 1333)
    else:
        assert with_backbone[0].seg_logits.data.shape == (150, 512, 512)
    _predictions_equal(with_backbone[0], replayed[0])
