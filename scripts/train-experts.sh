#!/usr/bin/env bash
# Train the shipped experts (mpg/experts/) from ../shared/data with the documented settings:
# four MBTI axis adapters and two role-play adapters, one after the other, each with its model card.
#   bash scripts/train-experts.sh [DATA_DIR] [OUT_DIR] [EXPERT ...]   (e.g. ... mbti_s_n mbti_t_f)
# Per-axis pairs and epochs: S/N (480 distinct pairs, one epoch), T/F (240 x 2) and J/P (160 pairs,
# each also from the other side: --mirror-sides; a third epoch over the same 160 had scored lower)
# use the shared-prompt DPO loop (mpg/dpo.py); E/I keeps the settings and trainer (TRL's DPOTrainer) it
# was shipped with (docs/results.md). Each
# expert trains on a seeded subset and leaves the rest of its train.jsonl unseen: the fidelity judges
# train only on that rest (mpg/eval/judge/ reads each expert's subset from its metrics.json). Each
# MBTI expert's ratio spread (for weights=spread compositions) is measured on its test pairs after.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
OUT=${2:-mpg/experts}
shift $(( $# > 2 ? 2 : $# ))
ONLY=" $* "
bash scripts/setup-env.sh train >/dev/null
want() { [[ "$ONLY" == "  " || "$ONLY" == *" $1 "* ]]; }
declare -A MBTI=(
  [e_i]="--max-train 160 --epochs 1 --trainer trl"
  [s_n]="--max-train 480 --epochs 1"
  [t_f]="--max-train 240 --epochs 2"
  [j_p]="--max-train 160 --epochs 1 --mirror-sides"
)
for axis in e_i s_n t_f j_p; do
  want "mbti_$axis" || continue
  # shellcheck disable=SC2086
  .venv/bin/mpg train-expert "$DATA/mbti/prefs/$axis/train.jsonl" --test "$DATA/mbti/prefs/$axis/test.jsonl" \
    --out "$OUT/mbti_$axis" ${MBTI[$axis]}
  .venv/bin/mpg calibrate-expert "$OUT/mbti_$axis" --pairs "$DATA/mbti/prefs/$axis/test.jsonl" --max-pairs 24
done
for kind in personality profile; do
  want "roleplay_$kind" || continue
  .venv/bin/mpg train-expert "$DATA/roleplay/prefs/$kind/train.jsonl" --test "$DATA/roleplay/prefs/$kind/test.jsonl" \
    --out "$OUT/roleplay_$kind" --max-length 320   # role-play prompts are ~270 tokens
done
