"""Where the tests find the repository's configs and scripts."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / 'configs'
TOY_DEMO = REPO / 'projects' / 'toy_demo'
#: Every config users run: ours under configs/ (but _base_/) and the toy demo's.
ALL_CONFIGS = sorted([*(p for p in CONFIG_DIR.rglob('*.py') if '_base_' not in p.parts),
                      *(TOY_DEMO / 'configs').glob('*.py')])
TOY_DETECTION_CONFIG = TOY_DEMO / 'configs' / \
    'mask-rcnn_swinv2-toy-p4-w8_fpn_gn-head_2x_toy-coco-128x128.py'
TOY_SEGMENTATION_CONFIG = TOY_DEMO / 'configs' / \
    'upernet_swinv2-toy-p4-w8_1xb4-1600_toy-seg-128x128.py'


def config(name: str) -> Path:
    """The config file called ``name`` (configs/, its task folders, or the toy demo's)."""
    found = [p for p in ALL_CONFIGS if p.name == name]
    if len(found) != 1:
        raise FileNotFoundError(f'{len(found)} configs named {name}: {found}')
    return found[0]
