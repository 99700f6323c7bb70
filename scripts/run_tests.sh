#!/usr/bin/env bash
# run_tests.sh -- the one test command.  Extra arguments go to pytest, e.g.
#     scripts/run_tests.sh -m 'not bpf' -k sframe
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="$ROOT/.venv/bin/python"

if [[ ! -x $PY ]]; then
    echo "run_tests.sh: $ROOT/.venv is missing: run scripts/setup.sh first" >&2
    exit 2
fi

cd "$ROOT"
exec "$PY" -m pytest -q "$@"
