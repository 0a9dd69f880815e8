#!/usr/bin/env bash
# Distributed training over torchrun: one process per GPU (or per CPU worker).
#
#   bash tools/dist_train.sh CONFIG NUM_PROC [tools/train.py args...]
#
# Multi-node: run the same command on every node with NNODES, NODE_RANK, MASTER_ADDR
# and PORT set (torchrun's static rendezvous). GPUs use the config's env_cfg.dist_cfg
# (nccl); without CUDA the tools start gloo (swin_backbone/engine/launch.py).
set -euo pipefail
CONFIG=$1
NPROC=$2
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
  "$here/train.py" "$CONFIG" --launcher pytorch "${@:3}"
