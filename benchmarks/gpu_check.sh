#!/usr/bin/env bash
# The GPU check on the lent GPU machine (benchmarks/gpu_check.py), in one device call:
#   here:  make gpu-wheels                      (builds .whl/: the packages the machine lacks, 3 MiB)
#   there: device run, carry [".whl"], command "bash benchmarks/gpu_check.sh", timeout 600
# Writes $OUT/gpu.md and $OUT/gpu_check.log; copy gpu.md to benchmarks/gpu.md afterwards.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the carried wheels failed (run make gpu-wheels here and carry .whl)"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 540 python3 -m benchmarks.gpu_check --out "$OUT/gpu.md" 2>&1 | tee "$OUT/gpu_check.log"
