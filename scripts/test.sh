#!/usr/bin/env bash
# The test suite. Sets itself up on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh dev,train,eval,serve >&2
# One worker per core (pytest-xdist): most tests run tiny models whose time is Python, not BLAS, so two
# processes on two cores take ~40% less wall time than one. MPG_TEST_WORKERS=0 runs in-process.
exec .venv/bin/python -m pytest -n "${MPG_TEST_WORKERS:-auto}" "$@"
