#!/usr/bin/env bash
# Multi-GPU / multi-node training with torchrun.
#   one node:   bash tools/dist_train.sh CONFIG GPUS [tools/train.py options]
#   two nodes:  NNODES=2 NODE_RANK=0 MASTER_ADDR=host0 bash tools/dist_train.sh CONFIG 8 ...   (on host0)
#               NNODES=2 NODE_RANK=1 MASTER_ADDR=host0 bash tools/dist_train.sh CONFIG 8 ...   (on host1)
set -euo pipefail
CONFIG=$1
GPUS=$2
shift 2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$GPUS" \
    "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "$@"
