#!/usr/bin/env bash
# Creates .venv/ with the pinned OpenMMLab stack and swin_backbone (editable).
#
# Idempotent: a stamp records a hash of the inputs; a second run with the same
# inputs only re-checks the environment. mmcv 2.1.0 has no binary wheel on
# PyPI, so it is built once per machine from the sdist and cached outside the
# repository, keyed by Python, torch and CUDA versions.
#
# Environment: PYTHON (interpreter for the venv, default python3),
#              SWIN_BACKBONE_CACHE (default ~/.cache/swin_backbone).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
PYTHON=${PYTHON:-python3}
venv="$repo/.venv"
vpy="$venv/bin/python"
cache=${SWIN_BACKBONE_CACHE:-$HOME/.cache/swin_backbone}
constraints="$repo/requirements/constraints.txt"
stamp="$venv/.install-stamp"
start=$(date +%s)

log() { printf '[install %4ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }
pin() { grep -E "^$1==" "$constraints" | head -n 1; }
pip_install() { "$vpy" -m pip install --disable-pip-version-check -q -c "$constraints" "$@"; }

inputs_hash=$(cat "$constraints" setup.cfg tools/install.sh projects/toy_demo/requirements.txt \
  | sha256sum | cut -c1-16)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$inputs_hash" && -x "$vpy" ]]; then
  log "environment up to date (.venv, inputs $inputs_hash)"
  exec "$vpy" tools/misc/check_env.py --quiet
fi

# 1. The virtualenv. A torch already importable in $PYTHON (say a CUDA build on
#    a GPU machine) is kept by letting the venv see that interpreter's packages.
if [[ ! -x "$vpy" ]]; then
  if "$PYTHON" -c 'import torch' 2>/dev/null; then
    log "creating .venv from $PYTHON, keeping its torch $("$PYTHON" -c 'import torch; print(torch.__version__)')"
    "$PYTHON" -m venv --system-site-packages "$venv"
  else
    log "creating .venv from $PYTHON"
    "$PYTHON" -m venv "$venv"
  fi
fi
if ! "$vpy" -c 'import torch' 2>/dev/null; then
  log "installing $(pin torch)"
  pip_install "$(pin torch)"
fi
pip_install "$(pin setuptools)" "$(pin wheel)" "$(pin ninja)" "$(pin numpy)"

# 2. mmcv with its compiled ops, from the wheel cache or built once.
key=$("$vpy" - <<'PY'
import sys, torch
cuda = torch.version.cuda if torch.cuda.is_available() or torch.version.cuda else None
print(f"py{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__.split('+')[0]}-"
      + (f"cu{cuda}" if cuda else "cpu"))
PY
)
wheel_dir="$cache/wheels/$key"
mmcv_pin=$(pin mmcv)
if ! ls "$wheel_dir"/mmcv-"${mmcv_pin#mmcv==}"-*.whl >/dev/null 2>&1; then
  mkdir -p "$wheel_dir"
  build_log="$wheel_dir/build.log"
  force_cuda=0
  if command -v nvcc >/dev/null && "$vpy" -c 'import torch, sys; sys.exit(not torch.version.cuda)'; then
    force_cuda=1
  fi
  log "building $mmcv_pin from source for $key (FORCE_CUDA=$force_cuda): ~15 min on 2 cores, log in $build_log"
  tmp_wheels=$(mktemp -d)
  (
    MMCV_WITH_OPS=1 FORCE_CUDA=$force_cuda MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      "$vpy" -m pip wheel -v --no-deps --no-build-isolation -w "$tmp_wheels" "$mmcv_pin" >"$build_log" 2>&1
  ) &
  builder=$!
  while kill -0 "$builder" 2>/dev/null; do
    sleep 30
    step=$(grep -oE '^ *\[[0-9]+/[0-9]+\]' "$build_log" | tail -n 1 | tr -d ' ' || true)
    log "building mmcv ${step:-(preparing)}"
  done
  if ! wait "$builder"; then
    tail -n 30 "$build_log"
    log "mmcv build failed; full log: $build_log"
    exit 1
  fi
  mv "$tmp_wheels"/mmcv-*.whl "$wheel_dir"/
  rmdir "$tmp_wheels" 2>/dev/null || true
  log "cached $(ls "$wheel_dir"/mmcv-*.whl)"
fi

# 3. The rest of the stack, then this package (editable) with its test and deployment tools,
#    then the demos'.
log "installing the OpenMMLab stack"
pip_install "$wheel_dir"/mmcv-"${mmcv_pin#mmcv==}"-*.whl "$(pin mmengine)" "$(pin mmdet)" \
  "$(pin mmsegmentation)" "$(pin pycocotools)" "$(pin ftfy)" "$(pin regex)"
pip_install --no-build-isolation -e ".[test,deploy]"
pip_install -r projects/toy_demo/requirements.txt  # the demos' own dependencies

# 4. Reference implementations for the parity tests, outside site-packages:
#    timm needs torchvision, whose only wheels for this torch break imports; transformers
#    and mmpretrain cannot share a folder (requirements/constraints.txt).
log "installing reference implementations into .venv/reference"
pip_install --no-deps --target "$venv/reference" --upgrade "$(pin timm)" "$(pin torchvision)"
pip_install --no-deps --target "$venv/reference-hf" --upgrade "$(pin transformers)" \
  "$(pin huggingface_hub)" "$(pin tokenizers)" "$(pin httpx2)" "$(pin httpcore2)" "$(pin h11)" \
  "$(pin idna)" "$(pin truststore)"
pip_install --no-deps --target "$venv/reference-mmpretrain" --upgrade "$(pin mmpretrain)" \
  "$(pin einops)" "$(pin importlib_metadata)" "$(pin zipp)" "$(pin markdown)" \
  "$(pin model-index)" "$(pin ordered-set)"

"$vpy" tools/misc/check_env.py
echo "$inputs_hash" >"$stamp"
log "done"
