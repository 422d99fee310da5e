#!/usr/bin/env bash
# One short GPU measurement (run where a GPU is present): UniGrad with the momentum encoder,
# ResNet-50 at 224 px, bf16 autocast, channels_last, batch as large as fits (halved on OOM).
set -uo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for b in ${BATCHES:-512 384 256 128}; do
  if python -m transfer bench trainer --arch resnet50 --size 224 --batch "$b" --data synthetic \
       --method unigrad --form grad --reps 5 --device cuda; then
    exit 0
  fi
  echo "batch $b did not fit; trying smaller" >&2
done
exit 1
