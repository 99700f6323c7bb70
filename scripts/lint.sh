#!/usr/bin/env bash
# lint.sh -- the static checks CI runs before the tests: ruff over the code, the tests
# and the scripts, and mypy --strict over profiler/ (settings in pyproject.toml).
# scripts/run_tests.sh runs it first when called with no arguments.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="$ROOT/.venv/bin"

for tool in ruff mypy; do
    if [[ ! -x $BIN/$tool ]]; then
        echo "lint.sh: $BIN/$tool is missing: run scripts/setup.sh" >&2
        exit 2
    fi
done

cd "$ROOT"
echo "==> ruff check profiler tests scripts"
"$BIN/ruff" check profiler tests scripts
echo "==> mypy --strict profiler"
"$BIN/mypy" --strict profiler
