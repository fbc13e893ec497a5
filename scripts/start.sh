#!/usr/bin/env bash
# Until the API lands (issue 8) "starting the service" means: train and save one real adapter
# on the packaged all-MiniLM-L6-v2 with the local CLI, showing progress.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m composer corpus export rt_polarity --out data/rt --train-size 2000
.venv/bin/python -m composer train-adapter --task rt_polarity --train data/rt/train.jsonl \
  --validation data/rt/validation.jsonl --out data/rt/adapter --num-layers 2 --max-length 64 --epochs 2
