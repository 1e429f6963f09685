#!/usr/bin/env bash
# The main job: an ENTJ-composed answer from the embedded SmolLM2 default, sampled exactly with `fused`
# (the sampler the default composition was chosen with, and the fastest on a CPU: docs/results.md#speed).
# Sets itself up on a fresh machine. Extra arguments go to `mpg generate` (e.g. --persona ISFP, or
# --sampler scr for the paper's sampler).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh >&2
prompt="${MPG_PROMPT:-How would you spend a free weekend?}"
exec .venv/bin/mpg generate "$prompt" --persona ENTJ --sampler fused --top-p 0.9 --stats "$@"
