"""Write our exports of the fixed modules in tests/composer/export_cases.py to
tests/fixtures/parity/exports/<case>/ (run in the project venv; then run check_exports.py in the
parity venv, which loads them in the reference libraries and writes their outputs)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.composer.export_cases import EXPORTS, cases, write  # noqa: E402

if __name__ == "__main__":
    for name, case in cases().items():
        shutil.rmtree(EXPORTS / name, ignore_errors=True)
        write(case, EXPORTS / name)
        print("wrote", EXPORTS / name)
