"""Probe: do the MBTI judges read the axis, or only the experts' house style?

1. Held-out texts (each axis's test.jsonl, chosen and rejected: no expert and no judge trained on them),
   per-text accuracy of that axis's judge on the texts as written and on the same texts rewritten by
   simple rules that keep their meaning: `plain` (lower case, no punctuation), `cut48` (the first 48
   tokens of the text, the length of a sampled answer), `drop` (every 4th word left out), `shuffle`
   (the sentences in reverse order).
2. Cross-axis: on the answers of one axis's expert alone (rows `expert_XY` of answers files), every
   axis's judge against the type's letter on that axis: the expert's own axis should be read, the
   others should be at chance (an expert carries no information about them), and the judges' lean
   (mean p(first letter)) shows a house style that pushes a judge one way whatever the type.
3. Prompt vs base: per axis, the judge's accuracy on `prompt` and `base` answers (same items).

    .venv/bin/python benchmarks/experiments/probes/judge_checks.py --answers A.json,B.json --out out/judge_checks.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # the repository root
sys.path.insert(0, str(ROOT))

from mpg.eval.judge import MBTI_FILES, load_or_train_judges  # noqa: E402
from mpg.personas import AXES  # noqa: E402
from mpg.stats import bounded_mean_ci, proportion  # noqa: E402


def rewrite(text: str, rule: str, tokenizer=None) -> str:
    """The text rewritten by one meaning-keeping rule (module docstring)."""
    if rule == "orig":
        return text
    if rule == "plain":
        return re.sub(r"\s+", " ", re.sub(r"[^\w\s']", " ", text.lower())).strip()
    if rule == "cut48":
        return tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids[:48])
    if rule == "drop":
        return " ".join(w for i, w in enumerate(text.split()) if i % 4 != 3)
    if rule == "shuffle":
        return " ".join(reversed(re.split(r"(?<=[.!?])\s+", text.strip())))
    raise ValueError(rule)


RULES = ("orig", "plain", "cut48", "drop", "shuffle")


def held_out(judge, data: Path, tokenizer) -> dict:
    out = {}
    for k, axis in enumerate(AXES):
        rows = [json.loads(x) for x in (data / "mbti/prefs" / MBTI_FILES[axis] / "test.jsonl").open()]
        texts = [t for r in rows for t in (r["chosen"], r["rejected"])]
        first = [x for r in rows for x in (r["side"] == axis[0], r["side"] != axis[0])]
        out[axis] = {}
        for rule in RULES:
            p = judge.predict_proba([rewrite(t, rule, tokenizer) for t in texts])[:, k]  # [2M]
            out[axis][rule] = proportion([bool(pi > 0.5) == f for pi, f in zip(p.tolist(), first)])
    return out


def on_answers(judge, rows: list[dict], method: str) -> dict:
    """Every axis's judge on one method's answers, against the type's letter on that axis."""
    mine = [r for r in rows if r["method"] == method]
    if not mine:
        return {}
    p = judge.predict_proba([r["text"] for r in mine])  # [N, 4]
    out = {"answers": len(mine)}
    for k, axis in enumerate(AXES):
        first = [r["mbti_type"][k] == axis[0] for r in mine]
        out[axis] = {
            "accuracy": proportion([bool(pi > 0.5) == f for pi, f in zip(p[:, k].tolist(), first)]),
            "lean_p_first": bounded_mean_ci(p[:, k].tolist()),
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--judges", default="out/judges")
    ap.add_argument("--answers", default="", help="comma list of answers.json files")
    ap.add_argument("--out", default="out/judge_checks.json")
    args = ap.parse_args(argv)
    from transformers import AutoTokenizer

    from mpg.default_model import default_base_path

    tokenizer = AutoTokenizer.from_pretrained(default_base_path(verbose=False))
    judge, _ = load_or_train_judges(args.data, args.judges, "minilm", progress=False)
    report = {"held_out": held_out(judge, Path(args.data), tokenizer), "answers": {}}
    rows = []
    for path in filter(None, args.answers.split(",")):
        rows += json.loads(Path(path).read_text())["parts"]["freeform"]["answers"]
    for m in dict.fromkeys(r["method"] for r in rows):
        report["answers"][m] = on_answers(judge, rows, m)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    for axis, by_rule in report["held_out"].items():
        print(axis, {r: round(v["mean"], 3) for r, v in by_rule.items()})
    for m, e in report["answers"].items():
        print(
            m, {a: (round(e[a]["accuracy"]["mean"], 2), round(e[a]["lean_p_first"]["mean"], 2)) for a in AXES}
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
