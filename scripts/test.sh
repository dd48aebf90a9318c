#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs it too).
# Installs cardsync with its test extras into the current Python, lints, runs pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k planner -x
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
python3 -m ruff check src tests benchmarks
python3 -m pytest "$@"
