"""The toy segmentation generator's class design (projects/toy_demo/toy_segmentation.py).

What the demo's claims rest on: the shape classes differ in geometry only (same colour
distribution), the label maps are the visible parts of the drawn objects, images vary
in size and aspect ratio, and a seed fixes every byte.
"""
from __future__ import annotations

import filecmp
from pathlib import Path

import cv2
import numpy as np
import pytest

from projects.toy_demo.toy_segmentation import (
    CLASSES, MIN_VISIBLE, SHAPE_CLASSES, TEXTURE_CLASSES, ToySample, ToySpec, generate,
    make_sample)

SHAPES = [CLASSES.index(name) for name in SHAPE_CLASSES]


@pytest.fixture(scope='module')
def samples() -> list[ToySample]:
    return [make_sample(np.random.default_rng([7, 0, i])) for i in range(120)]


def _nearest_centroid_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Fit class means on the even rows, score nearest-mean on the odd rows."""
    train, test = slice(0, None, 2), slice(1, None, 2)
    mu, sd = features[train].mean(0), features[train].std(0) + 1e-6
    z = (features - mu) / sd
    classes = np.unique(labels)
    centres = np.stack([z[train][labels[train] == c].mean(0) for c in classes])
    pred = classes[np.argmin(((z[test][:, None] - centres) ** 2).sum(-1), 1)]
    return float((pred == labels[test]).mean())


def _geometry(mask: np.ndarray) -> list[float]:
    """Solidity and circularity of the largest outline in ``mask`` (H, W) bool."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    c = max(contours, key=cv2.contourArea)
    area = cv2.contourArea(c)
    return [area / cv2.contourArea(cv2.convexHull(c)),
            4 * np.pi * area / cv2.arcLength(c, True) ** 2]


def test_class_design_names_at_least_four_shapes_and_one_or_two_textures() -> None:
    assert CLASSES == (*TEXTURE_CLASSES, *SHAPE_CLASSES)  # background is label 0, 'other'
    assert len(SHAPE_CLASSES) >= 4 and 1 <= len(TEXTURE_CLASSES) <= 2


def test_shape_classes_share_the_colour_distribution(samples: list[ToySample]) -> None:
    """The mean colour of a visible shape says nothing about its class; its outline does."""
    colours, geometry, labels = [], [], []
    for s in samples:
        for cls, mask in s.objects:
            visible = s.label == cls + 1
            if cls in SHAPES and visible.sum() >= 30:
                pixels = s.image[visible].astype(np.float32)
                colours.append(pixels.mean(0))
                geometry.append(_geometry(mask))
                labels.append(cls)
    labels = np.array(labels)
    counts = np.bincount(labels)[SHAPES]
    assert counts.min() > 0.15 * counts.sum()  # several hundred objects, all classes
    chance = 1 / len(SHAPES)
    # about 300 scored objects: chance +- 0.025 (one standard error); 0.35 is 4 of them above
    assert _nearest_centroid_accuracy(np.array(colours), labels) < chance + 0.1
    # the same classifier on two outline measures separates them: the test has power
    assert _nearest_centroid_accuracy(np.array(geometry), labels) > 0.85


def test_labels_are_the_visible_parts_of_the_drawn_objects(samples: list[ToySample]) -> None:
    for s in samples[:40]:
        expected = np.zeros(s.label.shape, np.uint8)
        for cls, mask in s.objects:  # later objects on top
            expected[mask] = cls + 1
        labelled = s.label > 0
        assert (s.label[labelled] == expected[labelled]).all()
        # on the objects, ignore only on the one-pixel seams at their outlines
        edges = np.zeros(s.label.shape, bool)
        for _, mask in s.objects:
            m = mask.astype(np.uint8)
            edges |= (cv2.dilate(m, np.ones((3, 3))) != cv2.erode(m, np.ones((3, 3))))
        covered = expected > 0
        assert not (~labelled & covered & ~edges).any()
        assert (~labelled & covered).sum() < 0.2 * covered.sum()
        assert not (labelled & ~covered).any()  # the background and its clutter: 'other'
        # every shape stays at least half visible under the shapes painted after it
        shapes = [m for cls, m in s.objects if cls in SHAPES]
        for i, mask in enumerate(shapes):
            above = np.zeros_like(mask)
            for m in shapes[i + 1:]:
                above |= m
            assert (mask & ~above).sum() >= MIN_VISIBLE * mask.sum()


def test_flat_shapes_are_painted_where_their_masks_are(samples: list[ToySample]) -> None:
    """Inside a visible shape the image is one colour (plus gradient and noise)."""
    spreads, steps = [], []
    for s in samples[:40]:
        image = s.image.astype(np.float32)
        for cls, _ in s.objects:
            visible = (s.label == cls + 1).astype(np.uint8)
            n, parts = cv2.connectedComponents(visible)
            for part in range(1, n):
                inner = cv2.erode((parts == part).astype(np.uint8), np.ones((3, 3))) > 0
                if cls in SHAPES and inner.sum() >= 30:
                    spreads.append(image[inner].std(0).max())
    assert len(spreads) > 100
    assert np.median(spreads) < 10 and max(spreads) < 25  # noise sigma 6, gradient <= 40


def test_texture_classes_are_two_tone_patterns(samples: list[ToySample]) -> None:
    for name in TEXTURE_CLASSES:
        spreads = []
        for s in samples[:60]:
            inner = cv2.erode((s.label == CLASSES.index(name) + 1).astype(np.uint8),
                              np.ones((3, 3))) > 0
            if inner.sum() >= 200:
                spreads.append(s.image[inner].astype(np.float32).std(0).max())
        assert len(spreads) >= 10 and np.median(spreads) > 30, name


def test_images_vary_in_size_and_aspect_ratio(samples: list[ToySample]) -> None:
    sides = ToySpec().sides
    shapes = {s.image.shape[:2] for s in samples}
    assert all(s.label.shape == s.image.shape[:2] for s in samples)
    assert all(sides[0] <= h <= sides[1] and sides[0] <= w <= sides[1] for h, w in shapes)
    assert len(shapes) > 100
    aspect = [w / h for h, w in shapes]
    assert min(aspect) < 0.75 and max(aspect) > 1.33
    small = make_sample(np.random.default_rng(0), sides=(40, 48))
    assert all(40 <= n <= 48 for n in small.label.shape)
    assert any(cls in SHAPES for cls, _ in small.objects)  # shapes shrink to fit


def test_every_class_occurs(samples: list[ToySample]) -> None:
    seen = np.bincount(np.concatenate([s.label.ravel() for s in samples]),
                       minlength=len(CLASSES) + 1)
    assert (seen[1:] > 0).all() and len(seen) == len(CLASSES) + 1
    assert (seen[[c + 1 for c in SHAPES]] / seen.sum() > 0.01).all()


def test_generation_is_deterministic_by_seed(tmp_path: Path) -> None:
    spec = ToySpec(num_train=3, num_val=2, sides=(40, 64), seed=1)
    a, b = generate(tmp_path / 'a', spec), generate(tmp_path / 'b', spec)
    files = sorted(p.relative_to(a) for p in a.glob('*/*/toy_*'))
    assert len(files) == 2 * (3 + 2)
    assert all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)
    c = generate(tmp_path / 'c', ToySpec(num_train=3, num_val=2, sides=(40, 64), seed=2))
    assert not any(filecmp.cmp(a / f, c / f, shallow=False) for f in files)
    label = cv2.imread(str(a / 'annotations' / 'validation' / 'toy_00001.png'),
                       cv2.IMREAD_UNCHANGED)
    image = cv2.imread(str(a / 'images' / 'validation' / 'toy_00001.jpg'))
    assert label.dtype == np.uint8 and label.shape == image.shape[:2]
    stamp = (a / 'images' / 'training' / 'toy_00000.jpg').stat().st_mtime_ns
    generate(a, spec)  # a complete copy of the same spec is kept
    assert (a / 'images' / 'training' / 'toy_00000.jpg').stat().st_mtime_ns == stamp
    generate(a, ToySpec(num_train=1, num_val=1, sides=(40, 64), seed=1))
    assert len(list((a / 'images' / 'training').glob('toy_*'))) == 1  # no stale files


def test_shape_sizes_follow_the_spec_and_a_new_radius_regenerates(tmp_path: Path) -> None:
    """Shapes are drawn with circumradius in ``ToySpec.radius`` (log-uniform, capped so a
    shape fits its image); the marker records the range, so a folder written with another
    range is regenerated, not reused."""
    def extents(radius: tuple[float, float]) -> list[float]:
        sizes = []
        for i in range(40):
            s = make_sample(np.random.default_rng([5, 0, i]), radius=radius)
            for cls, mask in s.objects:
                if cls in SHAPES:  # a polygon's circumradius: half its largest extent or more
                    ys, xs = np.nonzero(mask)
                    sizes.append(max(np.ptp(xs), np.ptp(ys)) + 1)
        return sizes
    default = ToySpec().radius
    small, large = extents((8.0, 9.0)), extents(default)
    # a 8-9 px circumradius, stretched by at most 1.28: never wider than 2 * 9 * 1.28 + 2
    assert max(small) <= 2 * 9 * 1.28 + 2
    # the default range: the smallest shapes span about 2 * 14 px (a triangle's height
    # 1.5 r at the least); the largest beyond the old 28 px maximum radius
    assert min(large) >= 1.5 * default[0] * 0.78 - 1 and max(large) > 2 * 28
    spec = ToySpec(num_train=1, num_val=1, sides=(64, 64), seed=1)
    a = generate(tmp_path / 'a', spec)
    before = (a / 'annotations' / 'training' / 'toy_00000.png').read_bytes()
    generate(a, ToySpec(num_train=1, num_val=1, sides=(64, 64), seed=1, radius=(8.0, 9.0)))
    assert (a / 'annotations' / 'training' / 'toy_00000.png').read_bytes() != before
