#!/usr/bin/env bash
# Distributed testing over torchrun; see dist_train.sh for the multi-node variables.
#
#   bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROC [tools/test.py args...]
set -euo pipefail
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-python}
here=$(cd "$(dirname "$0")" && pwd)

PYTHONPATH="$here/..${PYTHONPATH:+:$PYTHONPATH}" \
"$PYTHON" -m torch.distributed.run \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
  --master_port="$PORT" --nproc_per_node="$NPROC" \
  "$here/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
