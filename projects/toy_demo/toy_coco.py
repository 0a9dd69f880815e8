"""A deterministic toy instance-segmentation dataset in COCO format: shapes on clutter.

Each image has a noisy two-colour gradient background with clutter (lines, dots and small
irregular blobs that are not objects) and 2-7 shapes of five classes, of random colour,
size (about 12 to 64 px across), rotation and aspect ratio. Later shapes occlude earlier
ones; a placement that would hide more than half of an earlier shape is re-drawn, so every
annotated object stays at least half visible. Annotations are the *visible* part of each
shape as COCO polygons (several polygons when an occluder splits a shape), traced at 4x
resolution so they follow the drawn edges to about 1/8 px.

Coordinates follow COCO: pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)``. OpenCV puts pixel
centres at integers, hence the ``- 0.5`` when drawing.

Layout under ``root``::

    annotations/instances_train.json, annotations/instances_val.json
    train/000000.png ..., val/000000.png ...
"""
from __future__ import annotations

import json
import os
import os.path as osp
import shutil
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

CLASSES = ('circle', 'square', 'triangle', 'star', 'cross')
_SS = 4  # supersampling factor of the masks the polygons are traced from
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel vertex positions
SPEC_FILE = 'toy_coco_spec.json'


@dataclass(frozen=True)
class ToyCocoSpec:
    """What the generated images look like (sizes in px of the ``image_size`` canvas).

    Attributes:
        image_size: side of the square images.
        radius: ``(min, max)`` circumradius of a shape, drawn log-uniformly.
        objects: ``(min, max)`` shapes per image, inclusive.
        blob_radius: ``(min, max)`` radius of the irregular clutter blobs.
    """
    image_size: int = 128
    radius: tuple[float, float] = (7.0, 32.0)
    objects: tuple[int, int] = (2, 7)
    blob_radius: tuple[float, float] = (3.0, 8.0)


def shape_polygon(kind: str, center: tuple[float, float], radius: float, angle: float,
                  aspect: float) -> np.ndarray:
    """Vertices of a shape in continuous image coordinates.

    Args:
        kind: one of :data:`CLASSES`.
        center: ``(x, y)``; radius: circumradius in px before the aspect stretch.
        angle: rotation in radians; aspect: x-stretch (y is divided by it).

    Returns:
        ``(N, 2)`` float array of ``(x, y)``.
    """
    if kind == 'circle':
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif kind == 'square':
        pts = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) / np.sqrt(2)
    elif kind == 'triangle':
        t = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif kind == 'star':
        t = np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    elif kind == 'cross':
        a = 0.33
        pts = np.array([[a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a], [-a, -1],
                        [a, -1], [a, -a], [1, -a], [1, a], [a, a]])
    else:
        raise ValueError(f'unknown shape {kind!r}; expected one of {CLASSES}')
    pts = pts * radius * np.array([aspect, 1 / aspect])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return pts @ rot.T + np.asarray(center)


def _fill(canvas: np.ndarray, polygon: np.ndarray, scale: int, value: Any,
          antialias: bool = False) -> None:
    """Fill a continuous-coordinate polygon into a canvas ``scale`` times the image size."""
    pts = np.round((polygon * scale - 0.5) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(canvas, [pts], value, lineType=cv2.LINE_AA if antialias else cv2.LINE_8,
                 shift=_SHIFT)


def _background(rng: np.random.Generator, spec: ToyCocoSpec) -> np.ndarray:
    """``(size, size, 3)`` uint8 BGR: gradient + noise + lines, dots and blobs (clutter)."""
    size = spec.image_size
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    direction = rng.normal(size=2)
    yy, xx = np.mgrid[0:size, 0:size] / size
    t = (direction[0] * xx + direction[1] * yy)
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    img = c0 * (1 - t[..., None]) + c1 * t[..., None] + rng.normal(0, 8, (size, size, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(2, 7)):
        p, q = rng.uniform(0, size, 2).astype(int), rng.uniform(0, size, 2).astype(int)
        cv2.line(img, tuple(map(int, p)), tuple(map(int, q)), rng.uniform(0, 255, 3).tolist(),
                 int(rng.integers(1, 3)), cv2.LINE_AA)
    for _ in range(rng.integers(5, 16)):
        p = rng.uniform(0, size, 2).astype(int)
        cv2.circle(img, tuple(map(int, p)), int(rng.integers(1, 3)),
                   rng.uniform(0, 255, 3).tolist(), -1, cv2.LINE_AA)
    for _ in range(rng.integers(0, 3)):
        n = 9
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(*spec.blob_radius) * rng.uniform(0.5, 1.0, n)
        blob = np.stack([r * np.cos(t), r * np.sin(t)], 1) + rng.uniform(8, size - 8, 2)
        _fill(img, blob, 1, rng.uniform(0, 255, 3).tolist(), antialias=True)
    return img


def _visible_polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons (flat ``[x0, y0, x1, y1, ...]``) of a ``_SS``-times supersampled mask."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        if len(contour) < 3 or cv2.contourArea(contour) < _SS * _SS:
            continue
        pts = (contour.reshape(-1, 2).astype(np.float64) + 0.5) / _SS
        polygons.append([round(float(v), 2) for v in pts.reshape(-1)])
    return polygons


def _place_objects(rng: np.random.Generator, spec: ToyCocoSpec, count: int,
                   max_tries: int = 60) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Draw ``count`` shapes one after the other, each on top of the previous ones.

    Returns ``(class index, polygon (N, 2), full supersampled mask (H*SS, W*SS) uint8)``
    per shape, in drawing order; a placement that would leave an earlier shape less than
    half visible is retried (up to ``max_tries`` times, then the shape is skipped).
    """
    placed: list[tuple[int, np.ndarray, np.ndarray]] = []
    size = spec.image_size
    hi = size * _SS
    log_radius = np.log(spec.radius)
    for _ in range(count):
        for _ in range(max_tries):
            label = int(rng.integers(len(CLASSES)))
            radius = float(np.exp(rng.uniform(*log_radius)))
            aspect = float(np.exp(rng.uniform(-0.25, 0.25)))
            extent = radius * max(aspect, 1 / aspect) + 1
            if 2 * extent >= size:
                continue
            center = tuple(rng.uniform(extent, size - extent, 2))
            polygon = shape_polygon(CLASSES[label], center, radius,
                                    float(rng.uniform(0, 2 * np.pi)), aspect)
            mask = np.zeros((hi, hi), np.uint8)
            _fill(mask, polygon, _SS, 1)
            if all(_visible_fraction(m, placed[k + 1:], mask) >= 0.5
                   for k, (_, _, m) in enumerate(placed)):
                placed.append((label, polygon, mask))
                break
    return placed


def _visible_fraction(mask: np.ndarray, above: list, new_mask: np.ndarray) -> float:
    """Fraction of ``mask`` left visible under the shapes ``above`` it plus ``new_mask``."""
    hidden = new_mask.copy()
    for _, _, m in above:
        hidden |= m
    area = int(mask.sum())
    return float((mask & ~hidden.astype(bool)).sum()) / max(area, 1)


def render_image(seed: int, spec: ToyCocoSpec) -> tuple[np.ndarray, list[dict]]:
    """One image and its annotations (without ids), fully determined by ``seed``.

    Returns:
        ``(size, size, 3)`` uint8 BGR image; a list of dicts with ``category_id``
        (1-based), ``segmentation`` (list of flat polygons), ``bbox`` ``[x, y, w, h]``
        and ``area`` of the visible part.
    """
    rng = np.random.default_rng(seed)
    img = _background(rng, spec)
    bg_mean = img.reshape(-1, 3).mean(0)
    low, high = spec.objects
    placed = _place_objects(rng, spec, int(rng.integers(low, high + 1)))
    for _, polygon, _ in placed:
        color = rng.uniform(0, 255, 3)
        while np.abs(color - bg_mean).sum() < 120:
            color = rng.uniform(0, 255, 3)
        _fill(img, polygon, 1, color.tolist(), antialias=True)
    anns = []
    for k, (label, _, mask) in enumerate(placed):
        visible = mask.copy()
        for _, _, m in placed[k + 1:]:
            visible &= 1 - m
        polygons = _visible_polygons(visible)
        if not polygons:
            continue
        xy = np.concatenate([np.reshape(p, (-1, 2)) for p in polygons])
        x0, y0 = xy.min(0)
        x1, y1 = xy.max(0)
        anns.append(dict(category_id=label + 1, segmentation=polygons,
                         bbox=[round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                         area=round(float(visible.sum()) / _SS ** 2, 2), iscrowd=0))
    return img, anns


def _write_split(root: str, split: str, seeds: range, spec: ToyCocoSpec) -> str:
    os.makedirs(osp.join(root, split), exist_ok=True)
    images, annotations = [], []
    size = spec.image_size
    for image_id, seed in enumerate(seeds, start=1):
        img, anns = render_image(seed, spec)
        file_name = f'{image_id:06d}.png'
        cv2.imwrite(osp.join(root, split, file_name), img)
        images.append(dict(id=image_id, file_name=file_name, width=size, height=size))
        for ann in anns:
            annotations.append(dict(ann, id=len(annotations) + 1, image_id=image_id))
    coco = dict(images=images, annotations=annotations,
                categories=[dict(id=i + 1, name=n, supercategory='shape')
                            for i, n in enumerate(CLASSES)])
    ann_file = osp.join(root, 'annotations', f'instances_{split}.json')
    os.makedirs(osp.dirname(ann_file), exist_ok=True)
    with open(ann_file, 'w') as f:
        json.dump(coco, f)
    return ann_file


def _settings(spec: ToyCocoSpec, num_train: int, num_val: int, seed: int) -> dict[str, Any]:
    return dict(spec=asdict(spec), num_train=num_train, num_val=num_val, seed=seed)


def generate_toy_coco(root: str, num_train: int = 400, num_val: int = 100,
                      spec: ToyCocoSpec = ToyCocoSpec(), seed: int = 0) -> dict[str, str]:
    """Write the dataset under ``root`` (replacing it), atomically: into ``root.tmp``, then
    renamed, with the settings that made it in ``root/toy_coco_spec.json``. Train images use
    seeds ``seed*10**6 + i``, val ``seed*10**6 + 500000 + i``.

    Returns:
        ``{'train': ann_file, 'val': ann_file}``.
    """
    tmp = root.rstrip('/') + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    base = seed * 10**6
    _write_split(tmp, 'train', range(base, base + num_train), spec)
    _write_split(tmp, 'val', range(base + 500000, base + 500000 + num_val), spec)
    with open(osp.join(tmp, SPEC_FILE), 'w') as f:
        json.dump(_settings(spec, num_train, num_val, seed), f, indent=1)
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return _annotation_files(root)


def _annotation_files(root: str) -> dict[str, str]:
    return {split: osp.join(root, 'annotations', f'instances_{split}.json')
            for split in ('train', 'val')}


def _generated_here(root: str) -> bool:
    """Whether ``root`` holds a toy dataset this module wrote (ours to replace)."""
    if osp.isfile(osp.join(root, SPEC_FILE)):
        return True
    try:  # copies written before the spec file existed
        with open(_annotation_files(root)['train']) as f:
            names = [c['name'] for c in json.load(f)['categories']]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return tuple(names) == CLASSES


def ensure_toy_coco(root: str, num_train: int = 400, num_val: int = 100,
                    spec: ToyCocoSpec = ToyCocoSpec(),
                    seed: int = 0) -> tuple[dict[str, str], bool]:
    """Generate the dataset unless ``root`` already holds a complete copy made with the
    same settings; a toy copy made with other settings is regenerated, anything else at
    ``root`` is left alone (``FileExistsError``).

    Returns:
        ``(annotation files by split, whether it was generated now)``.
    """
    files = _annotation_files(root)
    wanted = _settings(spec, num_train, num_val, seed)
    try:
        with open(osp.join(root, SPEC_FILE)) as f:
            found = json.load(f)
    except (OSError, ValueError):
        found = None
    if found == json.loads(json.dumps(wanted)) and all(osp.isfile(f) for f in files.values()):
        return files, False
    if osp.exists(root) and os.listdir(root) and not _generated_here(root):
        raise FileExistsError(f'{root} exists and is not a toy dataset written by '
                              f'projects.toy_demo.toy_coco; move it away or pick another root')
    return generate_toy_coco(root, num_train, num_val, spec, seed), True
