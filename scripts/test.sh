#!/usr/bin/env bash
# Run the whole test suite: lint, then pytest with a real PostgreSQL started here (and Redis by the tests).
# Real-data tests are required (COMPOSER_REQUIRE_ASSETS=1): a missing asset fails, never skips.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
trap stop_services EXIT
start_services
echo "==> ruff"
.venv/bin/ruff check . || exit 1
.venv/bin/ruff format --check . || exit 1
echo "==> pytest"
COMPOSER_REQUIRE_ASSETS=1 COMPOSER_REQUIRE_SERVICES=1 .venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
