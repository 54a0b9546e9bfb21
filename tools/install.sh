#!/usr/bin/env bash
# Creates the project's virtual environment and installs the whole pinned stack:
# torch, timm, mmengine, mmcv (with compiled ops), mmsegmentation, mmdet,
# pycocotools and this project (editable). Idempotent: a second run takes
# about a minute because the mmcv wheel is built once and cached.
#
# Environment variables:
#   SDAE_VENV            virtual environment to create/use   (default: <repo>/.venv)
#   SDAE_PYTHON          interpreter that creates the venv    (default: python3.11, else python3)
#   SDAE_WHEEL_CACHE     where built mmcv wheels are kept     (default: ~/.cache/sdae-suite/wheels)
#   SDAE_MMCV_OPS        cpu | cuda: which compiled ops to build (default: cuda if
#                        torch sees a GPU, else cpu). For cuda also set
#                        TORCH_CUDA_ARCH_LIST, e.g. "8.0;9.0".
#   SDAE_MMCV_WHEEL_DIRS colon-separated folders searched for a prebuilt mmcv
#                        wheel before building (default: <repo>/../shared/wheels,
#                        used only if it exists and only for CPU ops on torch 2.14.1)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SDAE_VENV:-$ROOT/.venv}"
CONSTRAINTS="$ROOT/requirements/constraints.txt"
CACHE="${SDAE_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sdae-suite/wheels}"
MMCV_VERSION=2.1.0

log() { printf '[install %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { printf '[install] ERROR: %s\n' "$*" >&2; exit 1; }

pin() { sed -n "s/^$1==\(.*\)$/\1/p" "$CONSTRAINTS"; }
TORCH_VERSION="$(pin torch)"
[ -n "$TORCH_VERSION" ] || die "torch is not pinned in $CONSTRAINTS"

if [ ! -x "$VENV/bin/python" ]; then
    PY="${SDAE_PYTHON:-$(command -v python3.11 || command -v python3 || true)}"
    [ -n "$PY" ] || die "no python3.11 found; set SDAE_PYTHON to a Python 3.11 interpreter"
    "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
        || die "$PY is not Python 3.11 (the pinned stack and the mmcv wheel are cp311); set SDAE_PYTHON"
    log "creating virtual environment $VENV"
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -c "$CONSTRAINTS")

log "installing torch $TORCH_VERSION, torchvision and build tools"
"${PIP[@]}" torch torchvision setuptools wheel ninja numpy

# --- mmcv 2.1.0 with compiled ops --------------------------------------------
mmcv_ops_work() {
    "$VENV/bin/python" - <<'PY' 2>/dev/null
import torch
from mmcv.ops import nms, roi_align  # compiled ops; fails on an ABI mismatch
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]])
nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
roi_align(torch.rand(1, 1, 8, 8), torch.tensor([[0., 0., 0., 4., 4.]]), (2, 2))
print("ok")
PY
}

OPS="${SDAE_MMCV_OPS:-$("$VENV/bin/python" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}"
case "$OPS" in cpu|cuda) ;; *) die "SDAE_MMCV_OPS must be cpu or cuda, got '$OPS'";; esac
# A compiled wheel is bound to the torch ABI it was built against and to its ops flavour.
WHEEL_DIR="$CACHE/mmcv-$MMCV_VERSION-torch$TORCH_VERSION-$OPS-cp311"
mkdir -p "$WHEEL_DIR"

if [ "$(mmcv_ops_work)" = ok ]; then
    log "mmcv $MMCV_VERSION with $OPS ops already works in $VENV"
else
    if ! ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
        SEARCH="${SDAE_MMCV_WHEEL_DIRS-$ROOT/../shared/wheels}"
        if [ "$OPS" = cpu ] && [ "$TORCH_VERSION" = 2.14.1 ]; then
            IFS=: read -r -a seeds <<< "$SEARCH"
            for dir in "${seeds[@]}"; do
                [ -n "$dir" ] || continue
                for whl in "$dir"/mmcv-"$MMCV_VERSION"-cp311-cp311-linux_x86_64.whl; do
                    if [ -f "$whl" ]; then
                        log "seeding the wheel cache with prebuilt $whl"
                        cp "$whl" "$WHEEL_DIR/"
                        break 2
                    fi
                done
            done
        fi
    fi
    if ! ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
        log "building mmcv $MMCV_VERSION with $OPS ops from source (about 25-35 min on 2 cores; cached in $WHEEL_DIR)"
        BUILD="$(mktemp -d)"
        trap 'rm -rf "$BUILD"' EXIT
        # --no-build-isolation: mmcv's setup.py imports torch to compile against it.
        "$VENV/bin/python" -m pip download --disable-pip-version-check --no-deps \
            --no-binary mmcv --no-build-isolation "mmcv==$MMCV_VERSION" -d "$BUILD" -q
        tar -xzf "$BUILD/mmcv-$MMCV_VERSION.tar.gz" -C "$BUILD"
        SRC="$BUILD/mmcv-$MMCV_VERSION"
        # mmcv 2.1.0's setup.py hard-codes -std=c++14 / -std=c++17 for its C++ and
        # CUDA sources, but the headers of torch >= 2.10 use C++20 features and do
        # not compile under C++17. Raising the standard is the whole fix; the ops'
        # own sources compile unchanged under C++20.
        grep -q -- '-std=c++1[47]' "$SRC/setup.py" || die "mmcv setup.py no longer contains -std=c++14/17; re-check the build patch"
        sed -i 's/-std=c++1[47]/-std=c++20/g' "$SRC/setup.py"
        if [ "$OPS" = cuda ]; then export FORCE_CUDA=1; else export FORCE_CUDA=0; fi
        MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
            "$VENV/bin/python" -m pip wheel --disable-pip-version-check --no-deps \
            --no-build-isolation "$SRC" -w "$BUILD/dist"
        mv "$BUILD"/dist/mmcv-"$MMCV_VERSION"-*.whl "$WHEEL_DIR/"
        log "cached $(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl)"
    fi
    log "installing mmcv from $WHEEL_DIR"
    "${PIP[@]}" --force-reinstall --no-deps "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl
    "${PIP[@]}" mmcv  # its pure-Python requirements (addict, yapf, opencv, ...)
    [ "$(mmcv_ops_work)" = ok ] || die "mmcv.ops fails to import from $WHEEL_DIR (ABI mismatch?). Delete $WHEEL_DIR and rerun to rebuild."
fi

log "installing mmengine, mmsegmentation, mmdet, pycocotools and the project (editable)"
"${PIP[@]}" -e "$ROOT[dev]"
# mmseg/mmdet must not replace the compiled mmcv with a source build.
[ "$(mmcv_ops_work)" = ok ] || die "mmcv.ops broke during the final install step"
"$VENV/bin/python" -c 'import mmseg, mmdet, timm, mmengine, torch; print("torch", torch.__version__, "| timm", timm.__version__, "| mmengine", mmengine.__version__, "| mmseg", mmseg.__version__, "| mmdet", mmdet.__version__)'
log "done: activate with 'source $VENV/bin/activate'"
