#!/usr/bin/env bash
# The test suite. Sets itself up on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh dev,train,eval,serve >&2
exec .venv/bin/python -m pytest "$@"
