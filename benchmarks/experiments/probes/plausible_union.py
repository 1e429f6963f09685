"""Probe: the plausibility set widened from the anchor's to the union of the anchor's and
every expert's. Not an option of mpg: it was measured and did not win (docs/results.md, "Fourth pass").

The shipped constraint (`mpg.aggregators.plausible`) keeps the target to the tokens the anchor gives at
least alpha x its top token's probability. Here a token also stays when some expert numerator (the
expert LoRA under its own context) gives it at least beta x that expert's top (beta = $UNION_BETA,
default alpha): every kept token is one some fluent policy would write, so the experts' own style words
are no longer cut. Sampled with `fused` (exact for this law: it reads p_1 token by token); the
head-skipping support path is turned off, since the union needs every expert's full logits.

Run as benchmarks/record/fidelity.py (same arguments), with the composition's plausibility as alpha:

    UNION_BETA=0.5 .venv/bin/python benchmarks/experiments/probes/plausible_union.py --generate-only --parts freeform \
        --max-new-tokens 40 --freeform-types ENTJ,ESFP,ISTP,INFJ,ESTJ,ENFP,ISFJ,INTP --freeform-per-type 4 \
        --methods "compose:product,lam=1,plausibility=0.1" --no-billy --out out/probe/union_l1_b05

then score the answers with benchmarks/record/fidelity.py --answers (same method name).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

RECORD = Path(__file__).resolve().parents[2] / "record"
sys.path[:0] = [str(RECORD.parents[1]), str(RECORD)]  # the repository root (this mpg); fidelity.py

import mpg.policy_table as policy_table  # noqa: E402
import mpg.samplers.batch as batch  # noqa: E402
from mpg.aggregators import implausible, token_target_logits  # noqa: E402
from mpg.distributions import temper  # noqa: E402


def union_token_logprobs(self, lp: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """TargetRows.token_logprobs with the union rule. lp: [..., P, T, V] -> [..., T, V] log p_1."""
    anchor = lp[..., self.anchor, :, :]  # [..., T, V]
    num, den = lp[..., self.num, :, :], lp[..., self.den, :, :]  # [..., n, T, V] x2
    w = self.weights.to(lp.device)  # [n]
    # the unconstrained target, then the union's cut in place of the anchor's own
    logits = token_target_logits(
        anchor, num.transpose(-3, -2), den.transpose(-3, -2), w, self.aggregator, self.lam
    )
    alpha = self.plausibility
    if alpha > 0:
        beta = float(os.environ.get("UNION_BETA", alpha))
        cut = implausible(anchor, anchor.amax(-1, keepdim=True), alpha)  # [..., T, V]
        for i in range(num.shape[-3]):  # cut only what no expert finds plausible either
            expert = num[..., i, :, :]  # [..., T, V]
            cut &= implausible(expert, expert.amax(-1, keepdim=True), beta)
        logits = logits.masked_fill(cut, float("-inf"))
    return temper(logits, temperature, top_p)


if __name__ == "__main__":
    policy_table.TargetRows.token_logprobs = union_token_logprobs
    batch.Batch.support = lambda self: None  # full logits for every row
    import fidelity

    sys.exit(fidelity.main(sys.argv[1:]))
