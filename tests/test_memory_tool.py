"""tools/analysis_tools/memory.py: its high-water mark sees an allocation made after the reset
and not one freed before it, its extrapolation is a straight line through the measured
points, and its table compares each case with timm's."""
from __future__ import annotations

import subprocess
import sys

import pytest

from paths import REPO

TOOLS = REPO / 'tools' / 'analysis_tools'
sys.path.insert(0, str(TOOLS))
import memory  # noqa: E402

pytestmark = pytest.mark.skipif(not memory.peak_supported(),
                                reason='no /proc/self/clear_refs high-water-mark reset here')


_PEAK_SCRIPT = """
import sys, torch
sys.path.insert(0, sys.argv[1])
import memory
before = torch.ones(48 << 18)  # 48 MiB, freed before the reset
del before
baseline = memory.reset_peak()
block = torch.ones(64 << 18)  # 64 MiB, touched
print(memory.peak_bytes() - baseline)
"""


def test_peak_growth_counts_what_was_alive_after_the_reset() -> None:
    """In a fresh process, as the tool measures: a long-lived one (this test run) serves
    the allocation from memory it freed earlier and still holds, which is no growth."""
    out = subprocess.run([sys.executable, '-c', _PEAK_SCRIPT, str(TOOLS)], check=True,
                         capture_output=True, text=True).stdout
    grown = int(out.split()[-1])
    assert 60 << 20 <= grown <= 100 << 20, grown / 2**20


def test_largest_side_follows_the_line_through_two_sizes() -> None:
    # 1000 MiB at 1024^2 pixels, 2000 MiB at 2048^2 (model included): 1000 MiB per 3 * 2^20 px
    points = [dict(size=1024, peak_mib=900., model_mib=100.),
              dict(size=2048, peak_mib=1900., model_mib=100.)]
    side = memory.largest_side(points, 4000 * memory.MIB)
    pixels = 1024**2 + 3000 / 1000 * 3 * 2**20
    assert side == int(pixels ** 0.5) // 32 * 32


def test_table_gives_each_case_over_timms() -> None:
    def row(impl: str, peak: float, live: float) -> dict:
        return dict(impl=impl, mode='train', size=1024, with_cp=False, whole_backward=False,
                    peak_mib=peak, live_mib=live, model_mib=400., step_s=1., saved_mib=10.)
    lines = memory.table([row('ours', 500., 300.), row('timm', 1000., 400.)])
    assert '| train 1024x1024 | no | ours | 500 | 0.50x | 300 | 0.75x | 10 | 1.00 |' in lines
