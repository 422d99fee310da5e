#!/usr/bin/env bash
# Optional: install the mmsegmentation stack for `transfer run ... --engine mmseg`.
# The core package and its tests never need it (the embedded engine is always available).
#
#   scripts/install_mmseg.sh          full stack: mmcv 2.1.0 built from source with CPU ops
#                                     (about 35 minutes on 2 cores, a 32 MB wheel), then
#                                     mmengine, mmsegmentation 1.2.2, ftfy, regex
#   scripts/install_mmseg.sh --lite   mmcv-lite 2.1.0 (no compiled ops; about 3 minutes at most).
#                                     Enough for the test suite, which supplies a stand-in for
#                                     mmcv._ext (tests/tasks/seg_mmcv_stub.py); `transfer` itself
#                                     reports the mmseg engine unavailable on this install.
#
# Measured on a 2-core x86_64 Linux machine with torch 2.14.1. mmsegmentation 1.2.2 requires
# mmcv >= 2.0.0rc4, < 2.2.0. mmcv 2.1.0 ships only as source for this torch; its build needs
# setuptools<81 (pkg_resources) and -std=c++20 instead of -std=c++17 in its setup.py.
set -euo pipefail
PY=${PYTHON:-python}
PIP="$PY -m pip"

if [[ "${1:-}" == "--lite" ]]; then
  $PIP install "mmcv-lite==2.1.0" "mmengine>=0.10,<0.11" "mmsegmentation==1.2.2" ftfy regex
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$PIP install "setuptools<81" wheel ninja "mmengine>=0.10,<0.11"
$PIP download --no-deps --no-binary :all: "mmcv==2.1.0" -d "$work"
tar -xzf "$work"/mmcv-2.1.0.tar.gz -C "$work"
sed -i 's/-std=c++17/-std=c++20/g' "$work/mmcv-2.1.0/setup.py"
(cd "$work/mmcv-2.1.0" && MMCV_WITH_OPS=1 FORCE_CUDA=${FORCE_CUDA:-0} MAX_JOBS=${MAX_JOBS:-2} \
   $PIP install --no-build-isolation -v .)
$PIP install "mmsegmentation==1.2.2" ftfy regex
$PY -c "import mmcv, mmseg; from mmcv.ops import point_sample; print('mmcv', mmcv.__version__, 'mmseg', mmseg.__version__, 'with ops')"
