"""Steered policies: only their rows move, by exactly alpha * v at the chosen block; alpha = 0 changes nothing."""

import pytest
import torch
from test_scoring import assert_matches

from mpg.policies import Attribute, Policy, Target
from mpg.steering import Steer, decoder_layers, row_deltas, steered


@torch.inference_mode()
def test_alpha_zero_changes_nothing(engine):
    t = Target((Attribute(Policy(adapter="x", steering=Steer("v", 1, 0.0)), Policy(adapter="x"), 1.0),))
    table = engine.policy_table(t, "a b")
    scorer, policies = engine.build_scorer(table), table.policies
    lp = scorer.score([[]], torch.tensor([[[3, 4]]]))[0, :, 0]  # [P, 3, V]
    zero, plain = policies.index(t.attributes[0].num), policies.index(t.attributes[0].den)
    torch.testing.assert_close(lp[zero], lp[plain])


@torch.inference_mode()
def test_only_steered_rows_move_along_the_vector(engine):
    model = engine.models["base"]
    v = engine.vectors["v"]  # [2, H]
    steering = [(Steer("v", 0, 2.0),), None]
    deltas = row_deltas(steering, engine.vectors, 32, "cpu")
    ids = torch.tensor([[3, 4, 3], [3, 4, 3]])
    seen = []  # what block 1 receives = the residual stream after block 0: [2, 3, H]
    handle = decoder_layers(model)[1].register_forward_pre_hook(
        lambda m, args, kw: seen.append(args[0] if args else kw["hidden_states"]), with_kwargs=True
    )
    try:
        logits_plain = model(input_ids=ids).logits
        with steered(model, deltas):
            logits_moved = model(input_ids=ids).logits
    finally:
        handle.remove()
    plain, moved = seen
    torch.testing.assert_close(moved[0] - plain[0], (2.0 * v[0]).expand(3, -1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(moved[1], plain[1])
    unit = v[0] / v[0].norm()
    shift = ((moved[0] - plain[0]) @ unit).mean()
    assert shift == pytest.approx(
        2.0 * float(v[0].norm()), rel=1e-4
    )  # the mean projection moves by alpha |v|
    assert (logits_moved[0] - logits_plain[0]).abs().max() > 1e-2  # and the output distribution changes
    torch.testing.assert_close(logits_moved[1], logits_plain[1])


@torch.inference_mode()
def test_steered_rows_in_one_batch_equal_scratch_with_rollback(engine):
    t = Target(
        (
            Attribute(Policy(adapter="x", system="b", steering=Steer("v", 1, 1.5)), Policy(system="b"), 1.0),
            Attribute(Policy(steering=(Steer("v", 0, -1.0), Steer("v", 1, 0.5))), Policy(), 1.0),
        )
    )
    table = engine.policy_table(t, "a b")
    scorer, policies = engine.build_scorer(table), table.policies
    assert len(policies) == 4 and len(scorer.groups) == 1

    def check(ys, chunks):
        assert_matches(engine, policies, scorer.score(ys, torch.tensor(chunks)), ys, chunks, prompts=["a b"])

    check([[]], [[[3, 4]]])
    scorer.commit([1], [1])
    check([[3]], [[[4, 3]]])
    scorer.commit([1], [0])
    check([[3]], [[[4, 4], [3, 2]]])  # branches keep each row's steering


def test_steering_errors(engine):
    with pytest.raises(ValueError, match="unknown steering vector 'w'"):
        engine.generate("a b", [Attribute(Policy(steering=Steer("w", 0, 1.0)), Policy(), 1.0)])
    with pytest.raises(ValueError, match="out of range"):
        engine.generate("a b", [Attribute(Policy(steering=Steer("v", 5, 1.0)), Policy(), 1.0)])
    with pytest.raises(ValueError, match="finite"):
        engine.add_steering_vector("bad", torch.full((32,), float("nan")))
    with pytest.raises(TypeError, match="Steer"):
        Policy(steering=("v", 0, 1.0))
