#!/usr/bin/env bash
# Installs what the package, its tests and its demo need, into the current Python environment.
# Idempotent: already-installed parts are skipped. Needs the package registries (PyPI, Debian).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# torch: on this project's machines a CPU-usable build of torch 2.14.1 / torchvision 0.29.1 lies on
# local disk and pip takes it from there; elsewhere pip downloads it.
if ! $PY -c "import torch, torchvision" 2>/dev/null; then
  $PY -m pip install -q "torch==2.14.1" "torchvision==0.29.1" || $PY -m pip install -q torch torchvision
fi
$PY -m pip install -q -e ".[test]"
# the package's own dependencies (pyproject.toml) come with it: tqdm (progress), matplotlib (report plots)
$PY -c "import tqdm, matplotlib" || { echo "setup: tqdm/matplotlib did not install" >&2; exit 1; }
# Real data that installs from the registries (read from disk, never imported):
#   NEON tree tiles (detection) and a nuclei image + mask (segmentation).
$PY -m pip install -q --no-deps "deepforest==2.1.0" "stardist==0.9.2" 2>/dev/null || \
  echo "setup: could not install deepforest/stardist data wheels; trees_det / nuclei_seg will say so" >&2
# Fashion-MNIST (Debian package, 31 MB).
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${TRANSFER_FASHION_MNIST:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
      (apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) || \
      echo "setup: could not install dataset-fashion-mnist" >&2
  else
    echo "setup: Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist' or set TRANSFER_FASHION_MNIST" >&2
  fi
fi
