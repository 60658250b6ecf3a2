#!/usr/bin/env bash
# The packages the GPU machine lacks, as wheels in .whl/ (git-ignored) for the device tool's `carry`:
# the machine has torch, timm, pandas, pyarrow, scikit-image, opencv and matplotlib for Python 3.12,
# but no detectron2, pycocotools, lvis, jsonschema or their small dependencies, and no network.
# Also copies the official DINOv2 hub code (../shared/dinov2-hub) beside them when it is there.
# Usage: make gpu-wheels; then see benchmarks/gpu_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.whl
rm -rf "$OUT"
mkdir -p "$OUT"
PY=.venv/bin/python
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# compiled: for CPython 3.12 on x86-64
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
    -d "$OUT" pycocotools==2.0.11 rpds-py==2026.9.1
# pure Python (any 3.x): wheels from the index, or built here
"$PY" -m pip wheel -q --no-deps -w "$OUT" fvcore==0.1.5.post20221221 iopath==0.1.9 yacs==0.1.8 termcolor==3.3.0 \
    omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 lvis==0.5.3 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 \
    referencing==0.37.0 pydot==4.0.1
"$PY" envs/install_detectron2.py --wheel-dir "$OUT" > /dev/null
if [ -f ../shared/dinov2-hub/hubconf.py ]; then
    cp -r ../shared/dinov2-hub "$OUT/dinov2-hub"
fi
du -sh "$OUT"
ls "$OUT"
