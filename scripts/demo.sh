#!/usr/bin/env bash
# Quick start 1: set up, then run the end-to-end demo on Fashion-MNIST (CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec ${PYTHON:-python3} -m transfer demo "$@"
