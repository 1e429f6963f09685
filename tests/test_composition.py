"""mpg.composition: weight rules, anchors, the persona/CLI plumbing, and the composed target's law."""

import json

import pytest
import torch
from oracle import check_sampler
from tiny import EOS

from mpg.aggregators import plausible
from mpg.composition import Composition, apply_weight_rule, measure_ratio_spread
from mpg.eval.methods import composed_target, get_method
from mpg.eval.questionnaire import accuracy, calibrate
from mpg.expert_file import expert_spreads, write_spreads
from mpg.personas import NEUTRAL
from mpg.policies import Attribute, Policy, Target


def _letters():
    """Tiny stand-ins for two axis experts: E on adapter x, N on adapter y, with measured spreads."""

    def experts(letter):
        return {
            "E": Attribute.expert("x", "b a", 1.0, name="E"),
            "N": Attribute.expert("y", "a", 1.0, name="N"),
        }[letter]

    experts.spreads = {"E": 2.0, "N": 0.5}
    return experts


def test_composition_parses_and_names_round_trip():
    c = Composition.parse("mixture,lam=0.5,weights=spread,anchor=prompt")
    assert c == Composition("mixture", 0.5, "spread", "prompt")
    assert Composition.parse(c.name) == c
    assert Composition.parse("product") == Composition()
    for bad, match in [
        ("", "empty composition"),
        ("sum", "unknown aggregator"),
        ("product,lam=x", "lam 'x' is not a number"),
        ("product,lam=-1", "lam must be"),
        ("product,weight=spread", "field 'weight' is unknown"),
        ("product,anchor=steer", "unknown anchor"),
        ("product,weights=soft", "unknown weight rule"),
    ]:
        with pytest.raises(ValueError, match=match):
            Composition.parse(bad)


def test_plausibility_parses_names_and_validates():
    c = Composition.parse("product,lam=1,plausibility=0.1")
    assert c.plausibility == 0.1 and c.name == "product,lam=1,weights=given,anchor=base,plausibility=0.1"
    assert Composition.parse(c.name) == c
    assert "plausibility" not in Composition().name  # names of earlier points stay as they were
    for bad in ("product,plausibility=1", "product,plausibility=-0.1", "product,plausibility=x"):
        with pytest.raises(ValueError, match="plausibility"):
            Composition.parse(bad)
    with pytest.raises(ValueError, match=r"plausibility must be a number in \[0, 1\)"):
        Target((Attribute.expert("x", None),), plausibility=1.5)


def test_guard_and_ratio_parse_name_and_validate():
    c = Composition.parse("product,lam=1,plausibility=0.1,ratio=anchor,guard=union")
    assert (c.guard, c.ratio) == ("union", "anchor")
    assert c.name == "product,lam=1,weights=given,anchor=base,plausibility=0.1,guard=union,ratio=anchor"
    assert Composition.parse(c.name) == c
    assert "guard" not in Composition(plausibility=0.1).name and "ratio" not in Composition().name
    for bad, match in [
        ("product,plausibility=0.1,guard=any", "unknown guard"),
        ("product,guard=union", "guard=union needs a plausibility constraint"),
        ("product,ratio=base", "unknown ratio"),
    ]:
        with pytest.raises(ValueError, match=match):
            Composition.parse(bad)
    with pytest.raises(ValueError, match="guard=mixture needs"):
        Target((Attribute.expert("x", None),), guard="mixture")


def test_guard_cut_keeps_what_some_fluent_policy_would_write():
    from mpg.aggregators import guard_cut

    anchor = torch.tensor([0.6, 0.3, 0.06, 0.04]).log()  # [V]: plausible at 0.2: tokens 0, 1
    nums = torch.tensor([[0.1, 0.1, 0.7, 0.1], [0.5, 0.4, 0.05, 0.05]]).log()  # [n, V]: 2; 0, 1
    assert guard_cut(anchor, nums, 0.2, "anchor").tolist() == [False, False, True, True]
    assert guard_cut(anchor, nums, 0.2, "union").tolist() == [False, False, False, True]
    mix = (anchor.exp() + nums.exp().sum(0)) / 3  # [V]: 0.4, 0.267, 0.27, 0.063
    assert guard_cut(anchor, nums, 0.2, "mixture").tolist() == (mix < 0.2 * mix.max()).tolist()
    batched = guard_cut(anchor.expand(3, 4), nums.expand(3, 2, 4), 0.2, "union")  # [3, V]
    assert batched.tolist() == [[False, False, False, True]] * 3


def test_ratio_over_the_anchor_replaces_every_denominator(engine):
    comp = Composition.parse("product,lam=1,plausibility=0.1,anchor=prompt,ratio=anchor,guard=union")
    t = composed_target([_letters()(c) for c in "EN"], comp, "EN", _letters())
    assert all(a.den == t.anchor for a in t.attributes) and t.anchor.system and t.guard == "union"
    assert len(t.policies()) == 3  # anchor + two numerators: no denominator rows


def test_ratio_over_the_opposite_side_takes_each_letters_other_side(engine):
    from mpg.personas import DEFAULT_COMPOSITION, TRAITS, opposite_spec, persona

    assert opposite_spec("ENTJ") == "I=1.0,S=1.0,F=1.0,P=1.0"
    assert opposite_spec("E=1,n=0.5") == "I=1.0,S=0.5"
    comp = Composition.parse("product,ratio=opposite")
    assert comp.ratio == "opposite" and comp.name.endswith(",ratio=opposite")
    # with no other sides given, every attribute keeps its denominator
    letters = [_letters()(c) for c in "EN"]
    assert composed_target(letters, comp, "EN", _letters()).attributes == tuple(letters)
    target = persona(engine, "EN", experts="prompted", composition="product,ratio=opposite").target()
    assert [a.den.system for a in target.attributes] == [TRAITS["I"], TRAITS["S"]]
    # a free-text trait has no other side: it keeps its trait ratio, the letter takes its opposite
    mixed = persona(engine, "E", traits=[("calm", 1.0)], experts="prompted", composition=comp).target()
    assert [a.den.system for a in mixed.attributes] == [TRAITS["I"], NEUTRAL]
    assert DEFAULT_COMPOSITION.ratio == "trait"


def test_plausible_keeps_the_tokens_the_anchor_finds_likely():
    anchor = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()  # [V]
    logits = torch.tensor([0.0, 5.0, -1.0, 9.0])  # [V]: the composition's favourite is token 3
    kept = plausible(logits, anchor, 0.2)  # tokens with p >= 0.2 * 0.5 = 0.1
    assert kept[:3].tolist() == logits[:3].tolist() and kept[3] == -torch.inf
    assert torch.equal(plausible(logits, anchor, 0.0), logits)
    assert torch.isfinite(plausible(logits, anchor, 0.99)).tolist() == [True, False, False, False]


@pytest.mark.parametrize("sampler,k", [("fused", 1), ("speculative", 2)])
def test_token_samplers_sample_the_plausibility_constrained_target(engine, sampler, k):
    """The constrained law p_1(c) ~ anchor(c) exp(A(lam l(c))) 1[anchor(c) >= alpha max anchor], by
    enumeration, against the samplers; the constraint must change the law for the test to mean anything."""
    from oracle import exact_distribution, tv, tv_tolerance

    attrs = (Attribute.expert("x", "b a", 1.0, name="E"), Attribute.expert("y", "a", 1.0, name="N"))
    target = Target(attrs, "product", lam=1.5, plausibility=0.3)
    free = exact_distribution(engine, Target(attrs, "product", lam=1.5), "a b", 2, 1, EOS)
    constrained = exact_distribution(engine, target, "a b", 2, 1, EOS)
    assert tv(free, constrained) > 2 * tv_tolerance(constrained, 1000)
    check_sampler(engine, target, sampler, 2, k, "a b", EOS, 1000, 1)


def test_drafts_stay_inside_the_plausible_set(engine):
    """The proposal is kept to its own plausible tokens at the target's alpha (samplers.drafting.
    proposal_logprobs). At lam 0 the target IS the constrained anchor, so with the anchor drafting every
    drafted token must be accepted; an untruncated anchor would draft tokens of target mass 0."""
    from oracle import exact_distribution, tv

    attrs = (Attribute.expert("x", "b a", 1.0, name="E"),)
    target = Target(attrs, "product", lam=0.0, plausibility=0.3)
    free = exact_distribution(engine, Target(attrs, "product", lam=0.0), "a b", 3, 1, EOS)
    assert tv(free, exact_distribution(engine, target, "a b", 3, 1, EOS)) > 0.05  # mass outside the set
    out = engine.generate(
        ["a b"] * 8,
        target=target,
        sampler="speculative",
        chunk_size=3,
        max_new_tokens=6,
        seed=0,
        eos_token_id=[],
    )
    drafted = sum(s.drafted_tokens for s in out.stats)
    assert drafted >= 8 * 3 and sum(s.accepted_tokens for s in out.stats) == drafted


def test_scr_with_true_bound_samples_the_plausibility_constrained_pk(engine):
    """Chunk level: p~_k(c) is zero once any token of c is below alpha x the anchor's top probability
    at its position. SCR with a true bound (exact rejection sampling) against that law, enumerated."""
    from oracle import exact_distribution

    attrs = (Attribute.expert("x", "b a", 1.0, name="E"), Attribute.expert("y", "a", 1.0, name="N"))
    target = Target(attrs, "mixture", lam=1.5, plausibility=0.3)
    bound = [float("-inf")]
    exact_distribution(engine, target, "a b", 2, 2, EOS, max_log_weight=bound)
    out, _ = check_sampler(
        engine,
        target,
        "scr",
        2,
        2,
        "a b",
        EOS,
        1000,
        2,
        threshold=bound[0] + 1e-6,
        salvage=False,
        max_rejections=10**9,
        candidates=8,
    )
    assert sum(s.clips for s in out.stats) == 0 and sum(s.rejections for s in out.stats) > 0


def test_likelihood_scores_leave_the_plausibility_truncation_out(engine):
    """Like top-p, the constraint truncates sampling; scored options keep the untruncated target's
    log-probabilities (lm-eval's convention), else an implausible option would score -inf."""
    from dataclasses import replace

    from mpg.likelihood import continuation_ids, target_logliks

    attrs = (Attribute.expert("x", "b a", 1.0, name="E"),)
    free = Target(attrs, "product", lam=1.5)
    options = [continuation_ids(engine, t) for t in ("a", "b", "a b")]
    for mode in ("token", "chunk"):
        got, _ = target_logliks(engine, replace(free, plausibility=0.99), "a b", options, mode)
        want, _ = target_logliks(engine, free, "a b", options, mode)
        assert torch.isfinite(got).all() and torch.equal(got, want)


def test_weight_rules_follow_their_definitions():
    a = [Attribute.expert("x", None, 1.0, name="E"), Attribute.expert("y", None, 3.0, name="N")]
    assert [x.weight for x in apply_weight_rule(a, "given")] == [1.0, 3.0]
    assert [x.weight for x in apply_weight_rule(a, "sum1")] == [0.25, 0.75]
    spread = apply_weight_rule(a, "spread", [2.0, 0.5])  # mean spread 1.25
    assert [x.weight for x in spread] == pytest.approx([1.0 * 1.25 / 2.0, 3.0 * 1.25 / 0.5])
    with pytest.raises(ValueError, match="none for N"):
        apply_weight_rule(a, "spread", [2.0, None])


def test_spreads_are_stored_beside_the_contexts(tmp_path):
    (tmp_path / "mpg_expert.json").write_text(json.dumps({"contexts": {"E": "{prompt}"}}))
    assert expert_spreads(tmp_path) == {}
    write_spreads(tmp_path, {"E": 1.23456789, "I": 2.0}, "test pairs")
    info = json.loads((tmp_path / "mpg_expert.json").read_text())
    assert info["contexts"] == {"E": "{prompt}"} and info["ratio_spread_source"] == "test pairs"
    assert expert_spreads(tmp_path) == {"E": 1.23457, "I": 2.0}


def test_ratio_spread_is_the_rms_per_token_log_ratio(engine):
    from mpg.likelihood import continuation_ids, policy_token_logprobs

    attr = Attribute.expert("x", "b a")
    rows = [{"instruction": "a b", "chosen": "a a b", "rejected": "b"}]
    got = measure_ratio_spread(engine, attr, rows)
    sq, n = 0.0, 0
    for text in ("a a b", "b"):
        lp = policy_token_logprobs(
            engine, [attr.num, attr.den], "a b", continuation_ids(engine, text)
        )  # [2, T]
        sq += float(((lp[0] - lp[1]) ** 2).sum())
        n += lp.shape[1]
    assert got == pytest.approx((sq / n) ** 0.5, rel=1e-5) and got > 0


def test_composed_method_builds_the_composition(engine):
    m = get_method("compose:product,lam=0.5,weights=spread,anchor=prompt")
    assert m.kind == "composed" and m.sampler == "fused"
    t = composed_target([_letters()(c) for c in "EN"], m.composition, "EN", _letters())
    assert t.lam == 0.5 and t.aggregator == "product"
    assert [a.weight for a in t.attributes] == pytest.approx([1.25 / 2.0, 1.25 / 0.5])
    assert t.anchor.system and "extravert" in t.anchor.system and "intuitive" in t.anchor.system


def test_fused_samples_the_spread_normalised_prompt_anchored_target(engine):
    """SPEC-style law of the composition, written out by hand, against what `fused` samples from the
    target the composition builds (the oracle enumerates p_1 from scratch forwards)."""
    comp = Composition("product", 0.8, "spread", "prompt")
    experts = _letters()
    target = composed_target([experts(c) for c in "EN"], comp, "EN", experts)
    mean = (2.0 + 0.5) / 2
    by_hand = Target(
        (
            Attribute.expert("x", "b a", mean / 2.0, name="E"),
            Attribute.expert("y", "a", mean / 0.5, name="N"),
        ),
        "product",
        lam=0.8,
        anchor=Policy(system=target.anchor.system),
    )
    assert target == by_hand
    check_sampler(engine, target, "fused", 2, 1, "a b", EOS, 1000, None, 1.0)


def test_calibrated_questionnaire_removes_the_shared_lean():
    items = [{"id": 1, "dimension": "E/I", "keyed": "E"}, {"id": 2, "dimension": "E/I", "keyed": "I"}]
    # every type agrees with everything (acquiescence); E types a little more with item 1, less with 2
    scores = {
        "ESTJ": {"1": (5.0, 1.0), "2": (4.0, 1.0)},
        "ISTJ": {"1": (4.0, 1.0), "2": (5.0, 1.0)},
    }
    raw = accuracy(scores, items)["per_axis"]["EI"]
    cal = accuracy(calibrate(scores), items)["per_axis"]["EI"]
    assert raw["acc"] == 0.5 and cal["acc"] == 1.0
    c = calibrate(scores)
    assert c["ESTJ"]["1"][0] == pytest.approx(0.5) and c["ISTJ"]["1"][0] == pytest.approx(-0.5)
