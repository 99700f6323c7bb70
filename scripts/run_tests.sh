#!/usr/bin/env bash
# run_tests.sh -- the one test command.  With no arguments it runs scripts/lint.sh
# (ruff, mypy --strict) and then the whole suite.  Extra arguments go to pytest (no
# lint then), e.g.
#     scripts/run_tests.sh -m 'not bpf' -k sframe
#     scripts/run_tests.sh -m 'not slow' tests/unit      # the quick loop
# Tests marked slow always run here (--slow); a bare `pytest` leaves them out unless
# -m selects them (tests/conftest.py).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="$ROOT/.venv/bin/python"

if [[ ! -x $PY ]]; then
    echo "run_tests.sh: $ROOT/.venv is missing: run scripts/setup.sh first" >&2
    exit 2
fi

cd "$ROOT"
if [[ $# -eq 0 ]]; then
    scripts/lint.sh
fi
exec "$PY" -m pytest -q --slow "$@"
