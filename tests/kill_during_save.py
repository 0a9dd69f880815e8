"""Run a script (tools/train.py) that dies with SIGKILL half-way through writing a checkpoint.

Usage: ``python tests/kill_during_save.py NAME SCRIPT [ARGS...]``, e.g. ``NAME=epoch_3.pth``.

Only ``open`` inside ``swin_backbone.checkpoint.runner`` is replaced: when ``write_atomic``
opens the temporary file of the checkpoint called NAME, the file it gets writes the first half
of the bytes, flushes them to disk and kills the process, the state an OOM kill or a lost node
leaves mid-write. Everything else runs the real code.
"""
from __future__ import annotations

import builtins
import os
import os.path as osp
import runpy
import signal
import sys
from typing import IO, Any

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from swin_backbone.checkpoint import runner as runner_checkpoint  # noqa: E402


class _DyingFile:
    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    def write(self, data: Any) -> int:
        view = memoryview(data).cast('B')
        self._file.write(view[:len(view) // 2])
        self._file.flush()
        os.fsync(self._file.fileno())
        print(f'kill_during_save: SIGKILL after {len(view) // 2} of {len(view)} bytes of '
              f'{self._file.name}', flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        return 0

    def __enter__(self) -> _DyingFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._file.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def _main() -> None:
    name, script, *args = sys.argv[1:]

    def dying_open(file: Any, mode: str = 'r', *rest: Any, **kwargs: Any) -> Any:
        opened = builtins.open(file, mode, *rest, **kwargs)
        return _DyingFile(opened) if osp.basename(str(file)).startswith(f'{name}.tmp-') \
            else opened

    runner_checkpoint.open = dying_open  # a module global shadows the builtin there only
    sys.argv = [script, *args]
    runpy.run_path(script, run_name='__main__')


if __name__ == '__main__':
    _main()
