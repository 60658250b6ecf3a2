#!/usr/bin/env bash
# Create .venv/ in the repository root and install everything the pipeline needs (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
STAMP=.venv/.requirements.sha1
WANT="$(cat envs/requirements.txt envs/install_detectron2.py pyproject.toml | sha1sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  # pip 23.2 still downloads the detectron2 sdist, whose metadata names a direct-URL extra that
  # newer pips refuse to even prepare; it is the pip of Python 3.11's ensurepip.
  .venv/bin/python -m pip install --quiet "pip==23.2.1" "setuptools<81" wheel
  .venv/bin/python -m pip install --quiet -r envs/requirements.txt
  .venv/bin/python envs/install_detectron2.py
  .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
  echo "$WANT" > "$STAMP"
fi
.venv/bin/python -c "import torch, detectron2, faiss, lvis, snakemake, timm; print('environment ready:', 'torch', torch.__version__, '| detectron2', detectron2.__version__, '| faiss', faiss.__version__)"
