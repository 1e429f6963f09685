"""A product target is linear in its policies' final features: log p~_1 = W g + const with
g = h_0 + lam * sum_i w_i (h_num,i - h_den,i) (mpg.aggregators.product_features), for policies that share
one bias-free output head. Checked against the engine's own scorer and target formula."""

import dataclasses

import torch
from oracle import scratch_forward

from mpg.aggregators import implausible, product_features
from mpg.engine import Engine
from mpg.policies import Attribute, Target

PROMPTS = ["a b", "b", "a a b a"]
TARGET = Target((Attribute.expert("x", "b a b", 1.0), Attribute.expert("y", None, 0.5)), "product", lam=0.7)


@torch.inference_mode()
def composed_vs_target(engine: Engine, target: Target, prompts, lam: float | None = None):
    """(log_softmax(W g) [B, V], log p_1 without the cut from the engine's scorer and formula [B, V],
    the anchor's plausible set read off W h_0 [B, V], the set the 0.1 cut removes [B, V])."""
    head = engine.models[target.anchor.model].get_output_embeddings()
    assert head.bias is None
    # without the cut, the scorer computes every row's full distribution (with it, only what the cut keeps)
    table = engine.policy_table(dataclasses.replace(target, plausibility=0.0), prompts)
    rows = table.rows
    lp = engine.build_scorer(table).score([[] for _ in prompts])[:, :, 0]  # [B, P, 1, V]
    full = rows.token_logprobs(lp, 1.0, 1.0)[:, 0].double()  # [B, V]
    cut = dataclasses.replace(rows, plausibility=0.1).token_logprobs(lp, 1.0, 1.0)[:, 0].isinf()  # [B, V]
    composed, dropped = [], []
    for b in range(len(prompts)):
        h = torch.stack([scratch_forward(engine, p, ctx)[1] for p, ctx in table.sequence(b)])  # [P, H]
        g = product_features(
            h[rows.anchor],
            h[rows.num],
            h[rows.den],
            rows.weights.to(h.dtype),
            rows.lam if lam is None else lam,
        )  # [H]
        composed.append(torch.log_softmax(head(g).double(), -1))
        anchor_lp = torch.log_softmax(head(h[rows.anchor]).double(), -1)  # [V]
        dropped.append(implausible(anchor_lp, anchor_lp.max(), 0.1))
    return torch.stack(composed), full, torch.stack(dropped), cut


def test_product_target_is_the_head_of_composed_features(engine):
    composed, target, dropped, cut = composed_vs_target(engine, TARGET, PROMPTS)
    torch.testing.assert_close(composed, target, atol=1e-5, rtol=0)
    assert torch.equal(dropped, cut)


def test_misweighted_features_are_not_the_target(engine):
    """Negative control: the comparison above can fail (features composed with a wrong lam)."""
    composed, target, _, _ = composed_vs_target(engine, TARGET, PROMPTS, lam=0.5)
    assert (composed - target).abs().max() > 1e-3
