"""Probe: what the plausibility cut removes from each axis expert's own text.

Every answer an axis expert wrote alone (`expert_EI` ... rows of an answers.json from
benchmarks/record/fidelity.py or benchmarks/record/axes.py) is teacher-forced under the three policies of that
attribute: the anchor (the base under the plain prompt), the numerator (the expert LoRA under its trait
context) and today's denominator (the base under the same trait context). Per axis it reports:

- `outside`: the share of the expert's sampled tokens outside each guard's plausible set at ALPHA
  (guard "anchor": the anchor's own; "union": the anchor's or the numerator's);
- `removed`: the mean target mass the cut removes, per position, from the one-attribute target at lam 1
  under each ratio ("trait": anchor x num / den; "anchor": num itself) and guard;
- the tokens the anchor's cut removes most often from the expert's text.

    .venv/bin/python benchmarks/experiments/probes/cut_removes.py out/ax_single/answers.json \
        --alpha 0.1 --per-axis 64 --out out/cut_removes.json
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]  # the repository root
sys.path.insert(0, str(ROOT))

from mpg import Engine  # noqa: E402
from mpg.aggregators import guard_cut, token_target_logits  # noqa: E402
from mpg.eval.methods import mbti_attributes  # noqa: E402
from mpg.likelihood import policy_logprobs  # noqa: E402
from mpg.personas import AXES  # noqa: E402
from mpg.policies import Policy  # noqa: E402
from mpg.stats import bounded_mean_ci  # noqa: E402


def answer_figures(anchor: torch.Tensor, num: torch.Tensor, den: torch.Tensor, y: torch.Tensor, alpha: float):
    """One answer's per-position figures.

    anchor, num, den: [T, V] log-probs along the answer; y: [T] its tokens
    returns {name: [T] float} (1.0 = outside / mass removed)
    """
    out = {}
    for guard in ("anchor", "union"):
        cut = guard_cut(anchor, num.unsqueeze(-2), alpha, guard)  # [T, V]
        out[f"outside_{guard}"] = cut.gather(-1, y.unsqueeze(-1)).squeeze(-1).float()  # [T]
        for ratio, d in (("trait", den), ("anchor", anchor)):
            free = token_target_logits(
                anchor, num.unsqueeze(-2), d.unsqueeze(-2), torch.ones(1), "product", 1.0
            )
            p = torch.softmax(free, -1)  # [T, V] the unconstrained one-attribute target
            out[f"removed_{guard}_ratio_{ratio}"] = (p * cut).sum(-1)  # [T]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("answers", help="comma list of answers.json files holding expert_EI ... rows")
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--per-axis", type=int, default=64, help="answers per axis (the first N)")
    ap.add_argument("--experts", default="shipped")
    ap.add_argument("--out", default="out/cut_removes.json")
    args = ap.parse_args(argv)
    rows = [
        r
        for path in args.answers.split(",")
        for r in json.loads(Path(path).read_text())["parts"]["freeform"]["answers"]
    ]
    engine = Engine.from_pretrained(dtype="float32")
    tok = engine.tokenizer
    report = {"alpha": args.alpha, "answers_file": args.answers, "axes": {}}
    for axis in AXES:
        mine = [r for r in rows if r["method"] == f"expert_{axis}" and r["token_ids"]][: args.per_axis]
        per_token: dict[str, list[float]] = collections.defaultdict(list)
        per_answer: dict[str, list[float]] = collections.defaultdict(list)
        cut_words: collections.Counter = collections.Counter()
        for r in mine:
            letter = next(c for c in r["mbti_type"] if c in axis)
            attr = mbti_attributes(engine, letter, args.experts)[0]
            ids = list(r["token_ids"])
            lp, _, _ = policy_logprobs(
                engine, [Policy(), attr.num, attr.den], r["prompt"], [ids]
            )  # [3, 1, T, V]
            y = torch.tensor(ids)  # [T]
            figs = answer_figures(lp[0, 0], lp[1, 0], lp[2, 0], y, args.alpha)
            for k, v in figs.items():
                per_token[k] += v.tolist()
                per_answer[k].append(float(v.mean()))
            for t, out in zip(ids, figs["outside_anchor"].tolist()):
                if out:
                    cut_words[tok.decode([t])] += 1
        report["axes"][axis] = {
            "answers": len(mine),
            "tokens": len(per_token["outside_anchor"]),
            **{
                k: {"per_token": sum(v) / len(v), "per_answer": bounded_mean_ci(per_answer[k])}
                for k, v in per_token.items()
            },
            "most_cut": cut_words.most_common(25),
        }
        print(
            axis,
            json.dumps(
                {k: round(v["per_token"], 3) for k, v in report["axes"][axis].items() if isinstance(v, dict)}
            ),
            file=sys.stderr,
        )
        print("  cut most:", cut_words.most_common(15), file=sys.stderr)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
