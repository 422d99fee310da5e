#!/usr/bin/env bash
# Optional: install detectron2 for `transfer run ... --engine detectron2`.
#
# detectron2 is not on PyPI. Two routes:
#
#   scripts/install_detectron2.sh            (default) build detectron2 from its git source, as its
#                                            INSTALL.md says: pip install 'git+https://github.com/facebookresearch/detectron2.git'
#                                            (needs internet to GitHub, a C++ compiler, and CUDA for GPU ops;
#                                            several minutes). This is the route for real training.
#
#   scripts/install_detectron2.sh --cdo      the PyPI sdist `detectron2-cdo` 0.5 (detectron2 0.5's Python code,
#                                            without its C++ sources), built with ext_modules=[] (~20 s), plus its
#                                            pure-Python runtime deps. It lacks `detectron2._C` and references
#                                            Pillow's removed Image.LINEAR, so it does NOT import on its own:
#                                            the project's tests add two shims (tests/tasks/det_helpers.py) to
#                                            exercise the engine on CPU. The engine never shims; for real runs
#                                            use the default route.
#
# What it does: pip installs into the current Python environment; nothing else is touched.
set -euo pipefail
PY=${PYTHON:-python}
if [[ "${1:-}" == "--cdo" ]]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip download --no-deps --no-binary :all: --no-build-isolation detectron2-cdo==0.5 -d "$tmp"
  tar -xzf "$tmp"/detectron2_cdo-0.5.tar.gz -C "$tmp"
  # drop the C++/CUDA extension (its sources are not in the sdist)
  sed -i 's/^    ext_modules=get_extensions(),/    ext_modules=[],/' "$tmp"/detectron2_cdo-0.5/setup.py
  grep -q 'ext_modules=\[\]' "$tmp"/detectron2_cdo-0.5/setup.py
  "$PY" -m pip install --no-deps --no-build-isolation "$tmp"/detectron2_cdo-0.5
  "$PY" -m pip install "fvcore>=0.1.5,<0.1.6" "iopath>=0.1.7,<0.1.10" yacs termcolor tabulate cloudpickle tqdm \
    "omegaconf>=2.1" pycocotools
else
  "$PY" -m pip install pycocotools
  "$PY" -m pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'
fi
"$PY" - <<'PY'
from transfer.engines.det_detectron2 import available
print("detectron2 engine available:", available())
PY
