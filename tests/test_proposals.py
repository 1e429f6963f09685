"""Named proposals (mpg.proposals) and adaptive chunk lengths, on tiny models.

- the merged adapter is exactly the weighted sum of the experts' LoRA deltas: per layer, and for the
  whole model against a copy with the summed deltas folded into its weights;
- speculative stays exact (enumeration oracle) with the merged proposal and with adaptive chunks;
- bad inputs give clear errors.
"""

import pytest
import torch
from oracle import check_sampler
from peft import LoraConfig
from peft.tuners.lora import Linear as LoraLinear
from tiny import EOS, add_lora, tiny_model

from mpg.engine import Engine
from mpg.lora_sum import concat_lora
from mpg.personas import TRAITS, prompted_mbti
from mpg.policies import Attribute, Policy, Target
from mpg.proposals import merge_coefficients, merged_proposal, prompt_proposal
from mpg.samplers.drafting import proposal_logprobs
from mpg.samplers.state import next_chunk_size

PROMPT = "a b"
S = 1000  # oracle samples per test, as in test_oracles.py

# x (numerator), z (negative product weight, its own rank and modules), y over x (a denominator adapter),
# and a prompted attribute, which has no adapter and is left out of the merge
MIXED = Target(
    (
        Attribute.expert("x", "b a", 1.0),
        Attribute.expert("z", None, -0.5),
        Attribute(Policy(adapter="y"), Policy(adapter="x"), 0.25, name="y/x"),
        Attribute.prompted("a a", None, 0.3),
    ),
    lam=0.7,
)
MIXED_COEF = {"x": 0.7 * (1.0 - 0.25), "z": -0.5 * 0.7, "y": 0.25 * 0.7}


@pytest.fixture(scope="module")
def eng(tokenizer):
    """Its own engine (merged adapters are registered on it): x, y (rank 4 on q, v, o, down), z (rank 2
    on q and gate, another scaling) on the base, and a separate model "other"."""
    peft = add_lora(tiny_model(seed=0), ["x", "y"], alpha=8)
    torch.manual_seed(3)
    cfg = LoraConfig(r=2, lora_alpha=6, target_modules=["q_proj", "gate_proj"], init_lora_weights=False)
    peft.add_adapter("z", cfg)
    e = Engine(peft.eval(), tokenizer)
    e.adapters["base"] |= {"x", "y", "z"}
    e.add_model("other", tiny_model(seed=1), tokenizer)
    return e


def lora_modules(model, adapter):
    """(name, LoRA layer) of every module of the PEFT model that holds `adapter`."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLinear) and adapter in m.lora_A]


# ---- the merged adapter is the weighted sum ------------------------------------------------------
def test_concat_lora_is_the_weighted_sum_of_products():
    g = torch.Generator().manual_seed(0)
    A = [torch.randn(r, 6, generator=g) for r in (2, 3, 1)]  # [r_i, I]
    B = [torch.randn(5, r, generator=g) for r in (2, 3, 1)]  # [O, r_i]
    coef = [0.5, -1.25, 2.0]
    A_cat, B_cat = concat_lora(A, B, coef)
    assert A_cat.shape == (6, 6) and B_cat.shape == (5, 6)
    expected = sum(c * b @ a for a, b, c in zip(A, B, coef))  # [O, I]
    torch.testing.assert_close(B_cat @ A_cat, expected, atol=1e-6, rtol=1e-6)


def test_merge_coefficients_weigh_numerators_up_and_denominators_down():
    coef = merge_coefficients(MIXED)
    assert coef.keys() == MIXED_COEF.keys()
    for k, v in MIXED_COEF.items():
        assert coef[k] == pytest.approx(v)
    mixture = Target((Attribute.expert("x", None, 3.0), Attribute.expert("y", None, 1.0)), "mixture", lam=0.5)
    assert merge_coefficients(mixture) == pytest.approx({"x": 0.375, "y": 0.125})  # normalised weights
    anchored = Target((Attribute.expert("x", None, 1.0),), anchor=Policy(adapter="y"))
    assert merge_coefficients(anchored) == {"y": 1.0, "x": 1.0}  # the anchor's own adapter at 1


def test_merged_adapter_delta_is_the_weighted_sum_per_layer(eng):
    q = merged_proposal(eng, MIXED)
    model = eng.models["base"]
    layers = lora_modules(model, q.adapter)
    # every module any merged expert touches, and only those
    touched = {n for a in MIXED_COEF for n, _ in lora_modules(model, a)}
    assert {n for n, _ in layers} == touched and len(touched) > 0
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, m in layers:
            x = torch.randn(3, 2, m.in_features, generator=g)  # [N, T, I]
            base = m.base_layer(x)  # [N, T, O]
            merged = m(x, adapter_names=[q.adapter] * 3) - base
            expected = sum(
                c * (m(x, adapter_names=[a] * 3) - base) for a, c in MIXED_COEF.items() if a in m.lora_A
            )
            torch.testing.assert_close(merged, expected, atol=1e-5, rtol=1e-5, msg=name)


def folded_model(peft, coef: dict[str, float]):
    """A fresh copy of the tiny base with sum_a coef[a] * scaling_a * B_a @ A_a added to each weight."""
    plain = tiny_model(seed=0)  # same seed: the same weights as the engine's base
    modules = dict(plain.named_modules())
    with torch.no_grad():
        for name, m in peft.named_modules():
            if not isinstance(m, LoraLinear):
                continue
            delta = sum(
                c * float(m.scaling[a]) * m.lora_B[a].weight @ m.lora_A[a].weight  # [O, I]
                for a, c in coef.items()
                if a in m.lora_A
            )
            if isinstance(delta, torch.Tensor):
                modules[name.removeprefix("base_model.model.")].weight += delta
    return plain


def test_merged_model_logits_equal_the_folded_weights(eng):
    q = merged_proposal(eng, MIXED)
    peft = eng.models["base"]
    ids = torch.randint(0, 5, (2, 7), generator=torch.Generator().manual_seed(2))  # [N, T]
    with torch.no_grad():
        want = folded_model(peft, MIXED_COEF)(input_ids=ids).logits  # [N, T, V]
        got_peft = peft(input_ids=ids, adapter_names=[q.adapter] * 2).logits
        with eng.registry.multi_lora("base").rows([q.adapter] * 2):  # the kernel the engine drafts with
            got_kernel = peft(input_ids=ids).logits
        bare = peft(input_ids=ids, adapter_names=["__base__"] * 2).logits
    torch.testing.assert_close(got_peft, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_kernel, want, atol=1e-5, rtol=1e-5)
    assert (bare - want).abs().max() > 1e-2  # the deltas matter: the test can fail


def test_merged_adapter_matches_peft_cat_merge(tokenizer):
    """PEFT's add_weighted_adapter(combination_type="cat") computes the same delta (weights on A there,
    on B here) for positive weights; ours also takes negative ones and a single adapter."""
    peft = add_lora(tiny_model(seed=0), ["x", "y"], alpha=8)
    e = Engine(peft, tokenizer)
    e.adapters["base"] |= {"x", "y"}
    target = Target((Attribute.expert("x", None, 0.3), Attribute.expert("y", None, 0.6)))
    q = merged_proposal(e, target)
    peft.add_weighted_adapter(["x", "y"], [0.3, 0.6], "peft_cat", combination_type="cat")
    for _, m in lora_modules(peft, q.adapter):
        ours = m.scaling[q.adapter] * m.lora_B[q.adapter].weight @ m.lora_A[q.adapter].weight
        theirs = m.scaling["peft_cat"] * m.lora_B["peft_cat"].weight @ m.lora_A["peft_cat"].weight
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)


def test_merged_adapter_is_built_once_and_named_by_its_merge(eng):
    q1 = merged_proposal(eng, MIXED)
    n = len(eng.adapters["base"])
    q2 = merged_proposal(eng, Target(MIXED.attributes, lam=0.7))
    assert q1 == q2 and len(eng.adapters["base"]) == n
    q3 = merged_proposal(eng, Target(MIXED.attributes, lam=0.5))
    assert q3.adapter != q1.adapter and len(eng.adapters["base"]) == n + 1
    assert q1.system is None and q1.template == MIXED.anchor.template  # the anchor's context
    assert merged_proposal(eng, Target(MIXED.attributes, lam=0.0)) == MIXED.anchor  # nothing to add


# ---- the prompt proposal -------------------------------------------------------------------------
def test_prompt_proposal_names_every_trait():
    q = prompt_proposal(Target(tuple(prompted_mbti("ENTJ"))))
    assert q.system == " ".join(TRAITS[c] for c in "ENTJ") and q.adapter is None
    experts = Target((Attribute.expert("x", None, 1.0, name="I"), Attribute.expert("y", None, 0.5, name="P")))
    assert prompt_proposal(experts).system == TRAITS["I"] + " " + TRAITS["P"]  # MBTI letters by name
    framed = Target(experts.attributes, anchor=Policy(system="Be brief."))
    assert prompt_proposal(framed).system.startswith("Be brief. " + TRAITS["I"])


# ---- exactness ------------------------------------------------------------------------------------
def check_exact(engine, target, n_tokens, k, **kw):
    """speculative's samples against p_1 by enumeration (tests/oracle.py's check)."""
    return check_sampler(engine, target, "speculative", n_tokens, k, PROMPT, EOS, S, **kw)[0]


PRODUCT = Target((Attribute.expert("x", "b a", 1.0), Attribute.prompted("a a", None, 0.5)), "product")


def test_speculative_with_the_merged_proposal_matches_p1(eng):
    from mpg.proposals import resolve_proposal

    # lam = 2: at lam = 1 the merged proposal is already so close to p_1 (TV 0.18, vs 0.68 for the
    # anchor) that 1000 samples could not tell them apart; at lam = 2 the TV is 0.42 (tolerance 0.09)
    target = resolve_proposal(eng, Target(PRODUCT.attributes, lam=2.0), "merged")
    assert target.proposal.adapter.startswith("mpg_merged_")
    out = check_exact(eng, target, n_tokens=3, k=2)
    assert sum(s.accepted_tokens for s in out.stats) > 0


def test_speculative_with_adaptive_chunks_matches_p1(eng):
    mixture = Target((Attribute.expert("x", "b a", 0.7), Attribute.expert("y", "a", 0.3)), "mixture")
    out = check_exact(eng, mixture, n_tokens=4, k=1, adaptive_chunk=True, max_chunk_size=3)
    st = out.stats
    # started at k = 1: drafts longer than one token mean the chunk length did adapt
    assert sum(s.drafted_tokens for s in st) > sum(s.rounds for s in st)


# ---- adaptive chunks ------------------------------------------------------------------------------
def test_next_chunk_size_follows_the_heuristic_schedule():
    assert next_chunk_size(4, True, 16) == 6
    assert next_chunk_size(4, False, 16) == 3
    assert next_chunk_size(1, False, 16) == 1  # floor 1
    assert next_chunk_size(15, True, 16) == 16  # ceiling max_chunk_size


def test_scr_with_adaptive_chunks_runs_pilots_at_new_lengths(eng):
    kw = dict(sampler="scr", max_new_tokens=12, eos_token_id=[], chunk_size=2, seed=0, pilot=4)
    fixed = eng.generate([PROMPT] * 2, target=PRODUCT, **kw)
    adaptive = eng.generate([PROMPT] * 2, target=PRODUCT, adaptive_chunk=True, max_chunk_size=6, **kw)
    assert all(len(y) == 12 for y in adaptive.token_ids)
    pilots = [sum(s.pilot_tokens for s in o.stats) for o in (fixed, adaptive)]
    assert pilots[1] >= pilots[0] > 0


# ---- bad inputs ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(proposal="bogus"), "unknown proposal 'bogus'"),
        (dict(attributes=[Attribute.prompted("a a", None)], proposal="merged"), "no attribute has a LoRA"),
        (
            dict(
                attributes=[Attribute(Policy(model="other"), Policy(model="other"), name="far")],
                proposal="merged",
            ),
            "attribute 'far' runs on model 'other'",
        ),
        (
            dict(attributes=[Attribute.expert("x", None, 1.0)], proposal="prompt"),
            "attribute 'x' has no trait text",
        ),
        (dict(attributes=[Attribute.prompted("a a", None, -1.0, name="neg")], proposal="prompt"), "negative"),
        (dict(policy=Policy(), proposal="merged"), "this target has none"),
        (  # one adapter on both sides (ratio=opposite): the deltas cancel
            dict(
                attributes=[Attribute(Policy(adapter="x", system="a"), Policy(adapter="x", system="b"))],
                proposal="merged",
            ),
            "adds nothing",
        ),
        (
            dict(target=Target(PRODUCT.attributes, proposal=Policy()), proposal="merged"),
            "already has a proposal",
        ),
        (
            dict(attributes=[Attribute.expert("x", None, 1.0)], adaptive_chunk=True, max_chunk_size=2),
            "max_chunk",
        ),
    ],
)
def test_bad_proposals_and_chunk_settings_are_clear_errors(eng, kwargs, match):
    with pytest.raises(ValueError, match=match):
        eng.generate(PROMPT, sampler="speculative", max_new_tokens=2, **kwargs)


def test_a_named_proposal_in_the_target_is_built_by_generate(eng):
    with pytest.raises(ValueError, match="unknown proposal"):
        Target(PRODUCT.attributes, proposal="bogus")
    out = eng.generate(
        PROMPT, target=Target(PRODUCT.attributes, proposal="merged"), sampler="speculative", max_new_tokens=3
    )
    assert any(label.startswith("proposal:base+mpg_merged_") for label in out.batches[0].forward_passes)


def test_proposal_distances_under_a_plausibility_constraint():
    """benchmarks/experiments/proposals.py measures q as drafts are drawn from it (kept to its plausible set): a
    target of mass 0 where q has mass gives an infinite KL, not NaN; the kept proposal matches it."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks" / "experiments"))
    from proposals import distances

    logits = torch.tensor([[2.0, 2.0, 0.0]])  # [T=1, V=3]
    p_lp = torch.log_softmax(torch.tensor([[2.0, 2.0, float("-inf")]]), -1)  # the constrained anchor
    kl, tv = distances(torch.log_softmax(logits, -1), p_lp)
    assert kl.item() == float("inf") and 0 < tv.item() < 1
    kl, tv = distances(proposal_logprobs(logits, 1.0, 1.0, 0.5), p_lp)  # 0.5: e^0 < 0.5 e^2 is dropped
    assert abs(kl.item()) < 1e-6 and abs(tv.item()) < 1e-6
