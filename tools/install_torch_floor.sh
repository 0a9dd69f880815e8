#!/usr/bin/env bash
# Creates the torch-floor virtualenv that tests/test_torch_floor.py runs the backbone's tests
# in: torch 2.1.2 and mmengine only (requirements/torch-floor.txt), outside the repository
# (~5 GB, mostly torch's nvidia packages), once per machine; prints its interpreter.
#
# Idempotent: a stamp records a hash of the pins. Environment: PYTHON (default python3),
# SWIN_BACKBONE_CACHE (default ~/.cache/swin_backbone).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
pins="$repo/requirements/torch-floor.txt"
cache=${SWIN_BACKBONE_CACHE:-$HOME/.cache/swin_backbone}
venv="$cache/torch-floor-$(grep -E '^torch==' "$pins" | cut -d= -f3)"
stamp="$venv/.install-stamp"
hash=$(sha256sum "$pins" | cut -c1-16)

if [[ -f "$stamp" && "$(cat "$stamp")" == "$hash" && -x "$venv/bin/python" ]]; then
  echo "$venv/bin/python"
  exit 0
fi
if [[ ! -x "$venv/bin/python" ]]; then
  echo "[torch floor] creating $venv (torch 2.1.2 and its nvidia packages, ~3.5 GB download)" >&2
  "$PYTHON" -m venv "$venv"
else  # changed pins: pip installs only what differs
  echo "[torch floor] updating $venv to $pins" >&2
fi
"$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$pins" >&2
"$venv/bin/python" -c 'import torch, mmengine; print("[torch floor] torch", torch.__version__, "mmengine", mmengine.__version__)' >&2
echo "$hash" >"$stamp"
echo "$venv/bin/python"
