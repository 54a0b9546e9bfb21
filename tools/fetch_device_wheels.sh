#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored) the pure-Python wheels that tools/device_check.sh
# installs on the bare GPU machine, which has torch, torchvision, timm, numpy, pillow,
# opencv-headless, matplotlib, pyyaml, rich and pytest but no mmengine and no package
# index: mmengine and its dependencies missing there, at the versions of
# requirements/constraints.txt. Run here, then carry .whl with the device run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
packages=(mmengine addict termcolor yapf platformdirs)
pins=()
for name in "${packages[@]}"; do
    pin=$(grep -i "^${name}==" requirements/constraints.txt) || { echo "no pin for $name in requirements/constraints.txt" >&2; exit 1; }
    pins+=("$pin")
done
mkdir -p .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .whl "${pins[@]}"
ls -l .whl
