"""A deterministic toy semantic-segmentation dataset in ADE20K's folder layout.

The layout is the one mmseg's ADE20K configs read, so a toy config only changes
``data_root``, the class names and the image scale::

    <root>/images/training/toy_00000.jpg        (H, W, 3) uint8, BGR on disk
    <root>/annotations/training/toy_00000.png   (H, W) uint8, 0 = ignore, 1..K = class
    <root>/images/validation/...                 same, different seeds

As in ADE20K, label 0 means "unlabelled" and is dropped by ``reduce_zero_label=True``
(it becomes 255, the ignore index); here it marks a one-pixel seam around each
object, where a real annotator would also be unsure. Classes 1..K become 0..K-1.

Each image is a background texture with two to four objects pasted on top: textured
regions (stripes, checkers, dots: recognisable by texture) and flat shapes (disks,
triangles: recognisable by their outline, since their colours overlap). Colours are
jittered per object, so no class is a single colour. Image ``i`` of a split depends
only on ``(seed, split, i)``, so regenerating gives the same bytes for the same
numpy / OpenCV versions.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

CLASSES: tuple[str, ...] = ('background', 'stripes', 'checker', 'dots', 'disk', 'triangle')
PALETTE: tuple[tuple[int, int, int], ...] = (
    (120, 120, 120), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
    (245, 130, 48))
SPLITS: dict[str, int] = {'training': 0, 'validation': 1}  # folder -> seed component
MARKER = 'toy_segmentation.json'


@dataclass(frozen=True)
class ToySpec:
    """What to generate; the marker file in the root records it.

    Attributes:
        num_train: Images in ``training``.
        num_val: Images in ``validation``.
        size: Side of the square images in pixels.
        seed: Base seed; image ``i`` of split ``s`` uses ``(seed, s, i)``.
    """

    num_train: int = 400
    num_val: int = 60
    size: int = 128
    seed: int = 0


def _hsv_colour(rng: np.random.Generator, hue: float, spread: float = 18.) -> np.ndarray:
    """A BGR colour (3,) float32 near ``hue`` (OpenCV hue units, 0..180)."""
    h = (hue + rng.uniform(-spread, spread)) % 180
    hsv = np.array([[[h, rng.uniform(120, 255), rng.uniform(110, 255)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _coords(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (H, W) each, rotated by a random angle."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    t = rng.uniform(0, np.pi)
    return xx * np.cos(t) + yy * np.sin(t), -xx * np.sin(t) + yy * np.cos(t)


def _two_tone(mask: np.ndarray, rng: np.random.Generator, hue: float) -> np.ndarray:
    """(H, W, 3) image mixing two colours of the same hue family by ``mask`` (H, W)."""
    a, b = _hsv_colour(rng, hue), _hsv_colour(rng, hue + 90)
    return np.where(mask[..., None], a, b)


def _stripes(size: int, rng: np.random.Generator) -> np.ndarray:
    u, _ = _coords(size, rng)
    return _two_tone(np.sin(u * 2 * np.pi / rng.uniform(5, 10)) > 0, rng, hue=0)


def _checker(size: int, rng: np.random.Generator) -> np.ndarray:
    u, v = _coords(size, rng)
    p = rng.uniform(6, 12)
    return _two_tone((np.floor(u / p) + np.floor(v / p)) % 2 == 0, rng, hue=60)


def _dots(size: int, rng: np.random.Generator) -> np.ndarray:
    u, v = _coords(size, rng)
    p = rng.uniform(6, 10)
    du, dv = (u % p) - p / 2, (v % p) - p / 2
    return _two_tone(du * du + dv * dv < (p * 0.3) ** 2, rng, hue=30)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth low-frequency noise in a dull colour: (H, W, 3) float32."""
    noise = cv2.resize(rng.uniform(0, 1, (4, 4)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)
    grey = rng.uniform(60, 170)
    tint = rng.uniform(-25, 25, 3).astype(np.float32)
    return grey + tint + 70 * (noise[..., None] - 0.5)


def _flat(size: int, rng: np.random.Generator) -> np.ndarray:
    """A flat colour with a gentle gradient, shared by disks and triangles."""
    u, _ = _coords(size, rng)
    colour = _hsv_colour(rng, rng.uniform(0, 180), spread=0)
    return colour + (u / size - 0.5)[..., None] * rng.uniform(-40, 40)


TEXTURES: dict[int, Callable[[int, np.random.Generator], np.ndarray]] = {
    2: _stripes, 3: _checker, 4: _dots}


def _blob_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random smooth region (H, W) bool; median 22 % of the image (5-95 %: 8-39 %)."""
    field = cv2.resize(rng.normal(0, 1, (5, 5)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)
    cy, cx = rng.uniform(0.2, 0.8, 2) * size
    yy, xx = np.mgrid[0:size, 0:size]
    dist = np.hypot(yy - cy, xx - cx) / size
    return field - 4 * dist + rng.uniform(0.4, 1.2) > 0


def _shape_mask(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A disk / ellipse (label 5) or a triangle (label 6) as an (H, W) bool mask."""
    mask = np.zeros((size, size), np.uint8)
    c = rng.uniform(0.2, 0.8, 2) * size
    r = rng.uniform(0.1, 0.22) * size
    if label == 5:
        axes = (int(r), int(r * rng.uniform(0.7, 1.0)))
        cv2.ellipse(mask, (int(c[0]), int(c[1])), axes, rng.uniform(0, 180), 0, 360, 1, -1)
    else:
        angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2, 4]) * np.pi / 3
        angles += rng.uniform(-0.3, 0.3, 3)
        pts = c + r * 1.3 * np.stack([np.cos(angles), np.sin(angles)], 1)
        cv2.fillPoly(mask, [pts.round().astype(np.int32)], 1)
    return mask.astype(bool)


def make_sample(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One image and its label map.

    Returns:
        ``(image, label)``: (size, size, 3) uint8 BGR and (size, size) uint8 with
        0 = ignore (object seams) and 1..len(CLASSES) = class index + 1.
    """
    image = _background(size, rng)
    label = np.ones((size, size), np.uint8)
    seams = np.zeros((size, size), bool)
    objects = rng.integers(2, len(CLASSES) + 1, size=rng.integers(2, 5))
    for cls in sorted(int(c) for c in objects):  # textured regions first, shapes on top
        if cls in TEXTURES:
            mask, fill = _blob_mask(size, rng), TEXTURES[cls](size, rng)
        else:
            mask, fill = _shape_mask(cls, size, rng), _flat(size, rng)
        image[mask] = fill[mask]
        label[mask] = cls
        edge = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((2, 2)))
        seams = (seams & ~mask) | edge.astype(bool)
    image += rng.normal(0, 6, image.shape)  # sensor noise
    label[seams] = 0
    return np.clip(image, 0, 255).astype(np.uint8), label


def generate(root: str | Path, spec: ToySpec = ToySpec()) -> Path:
    """Write the dataset under ``root`` unless a complete copy of ``spec`` is there.

    Returns:
        The root, whose marker file records ``spec``.
    """
    root = Path(root)
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == asdict(spec):
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
            rng = np.random.default_rng([spec.seed, split_id, i])
            image, label = make_sample(spec.size, rng)
            cv2.imwrite(str(root / 'images' / split / f'toy_{i:05d}.jpg'), image,
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(str(root / 'annotations' / split / f'toy_{i:05d}.png'), label)
    marker.write_text(json.dumps(asdict(spec)))
    return root


def main() -> None:
    """CLI: ``python -m swin_backbone.toy_segmentation data/toy_seg [--num-train N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', help='output folder, e.g. data/toy_seg')
    defaults = ToySpec()
    for field in ('num_train', 'num_val', 'size', 'seed'):
        parser.add_argument(f'--{field.replace("_", "-")}', type=int,
                            default=getattr(defaults, field))
    args = parser.parse_args()
    spec = ToySpec(args.num_train, args.num_val, args.size, args.seed)
    print(f'toy segmentation data ready in {generate(args.root, spec)}')


if __name__ == '__main__':
    main()
