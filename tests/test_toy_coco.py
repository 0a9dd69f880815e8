"""The toy COCO generator: deterministic, valid COCO that pycocotools reads, polygons that
match the stated boxes and areas, occlusion present but bounded."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from projects.toy_demo.toy_coco import (CLASSES, ToyCocoSpec, _place_objects, ensure_toy_coco,
                                    generate_toy_coco, shape_polygon)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob('*')):
        if path.is_file():
            h.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope='module')
def toy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('toy') / 'toy_coco'
    generate_toy_coco(str(root), num_train=6, num_val=30, seed=3)
    return root


def test_deterministic(toy: Path, tmp_path: Path) -> None:
    again = tmp_path / 'again'
    generate_toy_coco(str(again), num_train=6, num_val=30, seed=3)
    assert _digest(again) == _digest(toy)
    other = tmp_path / 'other'
    generate_toy_coco(str(other), num_train=6, num_val=30, seed=4)
    assert _digest(other) != _digest(toy)


def test_ensure_generates_only_if_absent(toy: Path) -> None:
    before = _digest(toy)
    files, generated = ensure_toy_coco(str(toy), num_train=6, num_val=30, seed=3)
    assert not generated and _digest(toy) == before
    assert set(files) == {'train', 'val'}


def test_ensure_regenerates_a_copy_made_with_other_settings(tmp_path: Path) -> None:
    root = tmp_path / 'toy_coco'
    generate_toy_coco(str(root), num_train=2, num_val=2, seed=3)
    spec = ToyCocoSpec(image_size=64, radius=(6.0, 12.0))
    _, generated = ensure_toy_coco(str(root), num_train=2, num_val=2, spec=spec, seed=3)
    assert generated
    coco = COCO(str(root / 'annotations' / 'instances_train.json'))
    assert {(img['width'], img['height']) for img in coco.loadImgs(coco.getImgIds())} == {(64, 64)}
    _, generated = ensure_toy_coco(str(root), num_train=2, num_val=2, spec=spec, seed=3)
    assert not generated


def test_ensure_leaves_foreign_folders_alone(tmp_path: Path) -> None:
    root = tmp_path / 'mine'
    root.mkdir()
    (root / 'notes.txt').write_text('keep me')
    with pytest.raises(FileExistsError, match='not a toy dataset'):
        ensure_toy_coco(str(root), num_train=2, num_val=2)
    assert (root / 'notes.txt').read_text() == 'keep me'


def test_annotations_are_consistent_coco(toy: Path) -> None:
    coco = COCO(str(toy / 'annotations' / 'instances_val.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) >= 2 * 30 * 0.9  # 2-7 shapes per image, a few may not fit
    assert {a['category_id'] for a in anns} == set(range(1, len(CLASSES) + 1))
    split = 0
    for ann in anns:
        assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann['segmentation'])
        split += len(ann['segmentation']) > 1
        mask = coco.annToMask(ann)
        ys, xs = np.nonzero(mask)
        x, y, w, h = ann['bbox']
        # pycocotools' rasterisation of the polygon agrees with the box and area to ~1 px.
        assert xs.min() >= np.floor(x) - 1 and xs.max() <= np.ceil(x + w) + 1
        assert ys.min() >= np.floor(y) - 1 and ys.max() <= np.ceil(y + h) + 1
        assert abs(mask.sum() - ann['area']) <= 0.15 * ann['area'] + 8
    assert split > 0, 'no occluder ever splits a shape: occlusion is missing'
    sizes = [max(a['bbox'][2:]) for a in anns]
    assert min(sizes) < 16 and max(sizes) > 40  # varied scale


def test_every_shape_stays_at_least_half_visible() -> None:
    occluded = 0
    for seed in range(10):
        placed = _place_objects(np.random.default_rng(seed), ToyCocoSpec(), 7)
        for k, (_, _, mask) in enumerate(placed):
            above = np.zeros_like(mask)
            for _, _, m in placed[k + 1:]:
                above |= m
            visible = (mask & (1 - above)).sum() / mask.sum()
            assert visible >= 0.5, (seed, k, visible)
            occluded += visible < 1
    assert occluded > 0


def test_shape_polygons_have_the_expected_area() -> None:
    full_area = {'circle': np.pi, 'square': 2.0, 'triangle': 3 * np.sqrt(3) / 4}
    for name, area in full_area.items():  # unit circumradius
        x, y = shape_polygon(name, (0, 0), 1.0, 0.3, 1.0).T
        assert 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) == \
            pytest.approx(area, rel=0.01)
