"""A deterministic toy semantic-segmentation dataset in ADE20K's folder layout.

The layout is the one mmseg's ADE20K configs read, so a toy config only changes
``data_root``, the class names and the image scale::

    <root>/images/training/toy_00000.jpg        (H, W, 3) uint8, BGR on disk
    <root>/annotations/training/toy_00000.png   (H, W) uint8, 0 = ignore, 1..K = class
    <root>/images/validation/...                 same, different seeds

As in ADE20K, label 0 means "other" and is dropped by ``reduce_zero_label=True`` (it
becomes 255, the ignore index): here the background and a one-pixel seam around each
object, where a real annotator would also be unsure. Classes 1..K become 0..K-1.

The classes are designed so that most of them can only be told apart by geometry:

* the background (label 0, not a class): smooth low-frequency noise in a random
  colour, with clutter on it (lines, dots, small irregular blobs in random colours).
* two texture classes, ``stripes`` and ``checker``: irregular smooth regions filled
  with a two-colour pattern; both colours are random, so the pattern, not the hue,
  names the class.
* four shape classes, ``circle``, ``square``, ``triangle``, ``star`` (the outlines of
  ``projects.toy_demo.toy_coco``): flat fills with a gentle gradient, 14-36 px circumradius,
  random rotation and aspect stretch. Class, size, placement and colour are drawn
  independently, so every shape class has the same colour distribution; only the
  outline tells them apart. Shapes are painted after the textures and occlude them and
  each other; a placement that would leave an earlier shape less than half visible is
  re-drawn. Labels are the visible parts.

Images have random sizes (each side drawn independently from ``ToySpec.sides``), so
aspect ratios vary too. Image ``i`` of a split depends only on ``(seed, split, i)``, so
regenerating gives the same bytes for the same numpy / OpenCV versions.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .toy_coco import shape_polygon

TEXTURE_CLASSES: tuple[str, ...] = ('stripes', 'checker')
SHAPE_CLASSES: tuple[str, ...] = ('circle', 'square', 'triangle', 'star')
CLASSES: tuple[str, ...] = (*TEXTURE_CLASSES, *SHAPE_CLASSES)
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (255, 225, 25))
SPLITS: dict[str, int] = {'training': 0, 'validation': 1}  # folder -> seed component
MARKER = 'toy_segmentation.json'
RADIUS = (14.0, 36.0)  # default circumradius of a shape in px, drawn log-uniformly
MIN_VISIBLE = 0.5  # fraction of every shape left visible by the shapes above it
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel vertex positions


@dataclass(frozen=True)
class ToySpec:
    """What to generate; the marker file in the root records it.

    Attributes:
        num_train: Images in ``training``.
        num_val: Images in ``validation``.
        sides: ``(min, max)`` of each image side in pixels; height and width are drawn
            independently (uniform integers, inclusive).
        seed: Base seed; image ``i`` of split ``s`` uses ``(seed, s, i)``.
        radius: ``(min, max)`` circumradius of a shape in pixels, drawn log-uniformly
            (capped at ``min(H, W) / 2.6`` so that a shape fits its image).
    """

    num_train: int = 400
    num_val: int = 100
    sides: tuple[int, int] = (96, 176)
    seed: int = 0
    radius: tuple[float, float] = RADIUS


@dataclass
class ToySample:
    """One generated image with its labels and what was drawn.

    Attributes:
        image: (H, W, 3) uint8 BGR.
        label: (H, W) uint8: 0 = ignore (background, object seams), else class index + 1.
        objects: ``(class index, mask (H, W) bool)`` of every object in painting order
            (later ones on top); masks are the whole object, occluded parts included.
    """

    image: np.ndarray
    label: np.ndarray
    objects: list[tuple[int, np.ndarray]]


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A random BGR colour (3,) float32: any hue, saturation 0-255, value 40-255."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(0, 255), rng.uniform(40, 255)]]],
                   np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour at least 100 (L1, BGR) from ``under`` (3,), the mean it covers.

    The test depends on the pixels beneath only, never on the class, so every class
    keeps the same colour distribution.
    """
    for _ in range(100):
        colour = _colour(rng)
        if np.abs(colour - under).sum() >= 100:
            return colour
    return 255 - under  # practically unreachable: the complement always contrasts


def _coords(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (H, W) each, rotated by a random angle."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    t = rng.uniform(0, np.pi)
    return xx * np.cos(t) + yy * np.sin(t), -xx * np.sin(t) + yy * np.cos(t)


def _two_tone(pattern: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) image mixing two random colours by ``pattern`` (H, W) bool."""
    a = _colour(rng)
    b = _contrasting_colour(rng, a)
    return np.where(pattern[..., None], a, b)


def _stripes(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    u, _ = _coords(shape, rng)
    return _two_tone(np.sin(u * 2 * np.pi / rng.uniform(5, 10)) > 0, rng)


def _checker(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    u, v = _coords(shape, rng)
    p = rng.uniform(6, 12)
    return _two_tone((np.floor(u / p) + np.floor(v / p)) % 2 == 0, rng)


TEXTURES: dict[int, Callable[[tuple[int, int], np.random.Generator], np.ndarray]] = {
    CLASSES.index('stripes'): _stripes, CLASSES.index('checker'): _checker}


def _background(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Smooth noise in a random colour with clutter: (H, W, 3) float32.

    Clutter: 2-6 lines, 5-15 dots and 0-3 irregular blobs (3-8 px) in random colours,
    all labelled background.
    """
    h, w = shape
    noise = cv2.resize(rng.uniform(0, 1, (4, 4)).astype(np.float32), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    image = _colour(rng) + 70 * (noise[..., None] - 0.5)
    for _ in range(rng.integers(2, 7)):
        p, q = rng.uniform(0, 1, (2, 2)) * (w, h)
        cv2.line(image, tuple(map(int, p)), tuple(map(int, q)), _colour(rng).tolist(),
                 int(rng.integers(1, 3)), cv2.LINE_AA)
    for _ in range(rng.integers(5, 16)):
        p = rng.uniform(0, 1, 2) * (w, h)
        cv2.circle(image, tuple(map(int, p)), int(rng.integers(1, 3)),
                   _colour(rng).tolist(), -1, cv2.LINE_AA)
    for _ in range(rng.integers(0, 4)):
        t = np.sort(rng.uniform(0, 2 * np.pi, 9))
        r = rng.uniform(3, 8) * rng.uniform(0.5, 1.0, 9)
        blob = np.stack([r * np.cos(t), r * np.sin(t)], 1) + rng.uniform(0, 1, 2) * (w, h)
        cv2.fillPoly(image, [blob.round().astype(np.int32)], _colour(rng).tolist(),
                     cv2.LINE_AA)
    return image


def _blob_mask(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random smooth region (H, W) bool, typically 10-35 % of the image."""
    h, w = shape
    field = cv2.resize(rng.normal(0, 1, (5, 5)).astype(np.float32), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    cy, cx = rng.uniform(0.2, 0.8, 2) * (h, w)
    yy, xx = np.mgrid[0:h, 0:w]
    dist = np.hypot(yy - cy, xx - cx) / np.sqrt(h * w)
    return field - 4 * dist + rng.uniform(0.4, 1.2) > 0


def _shape_mask(kind: str, shape: tuple[int, int], rng: np.random.Generator,
                radius_range: tuple[float, float] = RADIUS) -> np.ndarray:
    """A shape of ``kind`` (a :data:`SHAPE_CLASSES` name) inside the image, (H, W) bool."""
    h, w = shape
    lo, hi = np.log(radius_range[0]), np.log(min(radius_range[1], min(h, w) / 2.6))
    radius = float(np.exp(rng.uniform(lo, max(lo, hi))))
    aspect = float(np.exp(rng.uniform(-0.25, 0.25)))
    extent = radius * max(aspect, 1 / aspect)
    centre = rng.uniform(0, 1, 2) * (w - 2 * extent, h - 2 * extent) + extent
    polygon = shape_polygon(kind, tuple(centre), radius, float(rng.uniform(0, 2 * np.pi)),
                            aspect)
    mask = np.zeros(shape, np.uint8)
    pts = np.round((polygon - 0.5) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, shift=_SHIFT)
    return mask.astype(bool)


def _place_shapes(shape: tuple[int, int], count: int, rng: np.random.Generator,
                  radius: tuple[float, float] = RADIUS,
                  max_tries: int = 30) -> list[tuple[int, np.ndarray]]:
    """``count`` shapes of random classes, each placed on top of the previous ones.

    A placement that would leave an earlier shape less than :data:`MIN_VISIBLE` visible
    is re-drawn (class included, so occlusion does not depend on the class); after
    ``max_tries`` the shape is skipped.
    """
    placed: list[tuple[int, np.ndarray]] = []
    for _ in range(count):
        for _ in range(max_tries):
            cls = len(CLASSES) - len(SHAPE_CLASSES) + int(rng.integers(len(SHAPE_CLASSES)))
            mask = _shape_mask(CLASSES[cls], shape, rng, radius)
            if all(_visible_fraction(m, [n for _, n in placed[k + 1:]] + [mask])
                   >= MIN_VISIBLE for k, (_, m) in enumerate(placed)):
                placed.append((cls, mask))
                break
    return placed


def _visible_fraction(mask: np.ndarray, above: list[np.ndarray]) -> float:
    """Fraction of ``mask`` (H, W) bool not covered by any of the masks ``above``."""
    hidden = np.logical_or.reduce(above) if above else np.zeros_like(mask)
    return float((mask & ~hidden).sum()) / max(int(mask.sum()), 1)


def make_sample(rng: np.random.Generator, sides: tuple[int, int] = ToySpec.sides,
                radius: tuple[float, float] = RADIUS) -> ToySample:
    """One image, its label map and the objects drawn (module docstring: the classes).

    Args:
        rng: The only source of randomness.
        sides: ``(min, max)`` of the image height and width, drawn independently.
        radius: ``(min, max)`` circumradius of the shapes in pixels.
    """
    shape = tuple(int(s) for s in rng.integers(sides[0], sides[1] + 1, 2))
    image = _background(shape, rng)
    objects: list[tuple[int, np.ndarray]] = []
    for cls in TEXTURES:  # each texture class in half of the images
        if rng.uniform() < 0.5:
            objects.append((cls, _blob_mask(shape, rng)))
    objects += _place_shapes(shape, int(rng.integers(3, 8)), rng, radius)

    label = np.zeros(shape, np.uint8)
    seams = np.zeros(shape, bool)
    for cls, mask in objects:
        if cls in TEXTURES:
            fill = TEXTURES[cls](shape, rng)
        else:  # flat colour with a gentle gradient, the same for every shape class
            u, _ = _coords(shape, rng)
            fill = (_contrasting_colour(rng, image[mask].mean(0))
                    + (u / max(shape) - 0.5)[..., None] * rng.uniform(-40, 40))
        image[mask] = fill[mask]
        label[mask] = cls + 1
        edge = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((2, 2)))
        seams = (seams & ~mask) | edge.astype(bool)
    image += rng.normal(0, 6, image.shape)  # sensor noise
    label[seams] = 0
    return ToySample(np.clip(image, 0, 255).astype(np.uint8), label, objects)


def generate(root: str | Path, spec: ToySpec = ToySpec()) -> Path:
    """Write the dataset under ``root`` unless a complete copy of ``spec`` is there.

    Returns:
        The root, whose marker file records ``spec``.
    """
    root = Path(root)
    marker = root / MARKER
    wanted = json.loads(json.dumps(asdict(spec)))  # tuples as JSON lists
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return root
    marker.unlink(missing_ok=True)  # an interrupted run leaves no marker behind
    for split, split_id in SPLITS.items():
        count = spec.num_train if split == 'training' else spec.num_val
        for kind in ('images', 'annotations'):
            folder = root / kind / split
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob('toy_*'):  # from an earlier spec; only our own names
                stale.unlink()
        for i in range(count):
            sample = make_sample(np.random.default_rng([spec.seed, split_id, i]), spec.sides,
                                 spec.radius)
            cv2.imwrite(str(root / 'images' / split / f'toy_{i:05d}.jpg'), sample.image,
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(str(root / 'annotations' / split / f'toy_{i:05d}.png'), sample.label)
    marker.write_text(json.dumps(wanted))
    return root


def main() -> None:
    """CLI: ``python -m projects.toy_demo.toy_segmentation data/toy_seg [--num-train N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', help='output folder, e.g. data/toy_seg')
    defaults = ToySpec()
    for field in ('num_train', 'num_val', 'seed'):
        parser.add_argument(f'--{field.replace("_", "-")}', type=int,
                            default=getattr(defaults, field))
    parser.add_argument('--sides', type=int, nargs=2, default=defaults.sides,
                        metavar=('MIN', 'MAX'), help='range of image heights and widths')
    parser.add_argument('--radius', type=float, nargs=2, default=defaults.radius,
                        metavar=('MIN', 'MAX'), help='range of shape circumradii in px')
    args = parser.parse_args()
    spec = ToySpec(args.num_train, args.num_val, tuple(args.sides), args.seed,
                   tuple(args.radius))
    print(f'toy segmentation data ready in {generate(args.root, spec)}')


if __name__ == '__main__':
    main()
