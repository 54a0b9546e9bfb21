#!/usr/bin/env bash
# The suite's check on a bare CUDA GPU machine in one command (README: "GPU readiness /
# device check"). Installs the pure-Python wheels carried in .whl/ (mmengine and the
# dependencies the machine lacks; tools/fetch_device_wheels.sh downloads them) into a
# private folder, then runs tools/device_check.py with the given arguments:
#
#   bash tools/device_check.sh --out "$OUT"                    # on the GPU machine
#   PYTHON=.venv/bin/python bash tools/device_check.sh --device cpu --quick   # test it on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    site=$(mktemp -d /tmp/sdae-site.XXXXXX)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
exec "$PYTHON" tools/device_check.py "$@"
