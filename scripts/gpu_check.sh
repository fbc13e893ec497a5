#!/usr/bin/env bash
# The CUDA checks, as one short script for a machine with a GPU (issue 31): the composer and worker tests with
# their models on the GPU, and the benches' GPU figures beside the CPU ones in docs/benchmarks.md. Run it from the
# repository root after scripts/install.sh (a CUDA build of torch<=2.14.1 must be installed in .venv).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 1
COMPOSER_TEST_DEVICE=cuda $PY -m pytest -q -p no:cacheprovider tests/composer tests/workers -x --maxfail=20 2>&1 | tail -40
$PY -m bench.fusion --quick --device cuda
$PY -m bench.kinds --quick --device cuda
