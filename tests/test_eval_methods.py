"""mpg.eval.methods / likelihood / questionnaire on the tiny engine (adapters "x", "y", model "other")."""

import json
import math

import pytest
import torch
from oracle import _scratch_logprobs

from mpg.eval.methods import (
    MBTI_METHODS,
    METHODS,
    ROLEPLAY_METHODS,
    alone,
    generate_kwargs,
    get_method,
    mbti_target,
    prompt_policy,
    register_merged_vector,
    roleplay_target,
)
from mpg.eval.questionnaire import (
    TYPES,
    accuracy,
    item_prompt,
    load_questionnaire,
    run_questionnaire,
)
from mpg.extract import PersonaVectors
from mpg.likelihood import (
    PolicyScorer,
    option_scores,
    policy_logprobs,
    policy_token_logprobs,
    target_loglik,
)
from mpg.personas import AXES, TRAITS
from mpg.policies import Attribute, Policy, Target
from mpg.steering import Steer

PROMPT = "a b a"


def tiny_experts(letter: str) -> Attribute:
    """Letter -> an expert attribute on the tiny adapters: first side of an axis "x", second "y"."""
    axis = next(a for a in AXES if letter in a)
    ctx = ("a " if letter == axis[0] else "b ") * (AXES.index(axis) + 1)
    return Attribute.expert(
        "x" if letter == axis[0] else "y", None, 1.0, name=letter, template=ctx + "{prompt}"
    )


# ---- methods ---------------------------------------------------------------------------------------------
def test_method_table():
    assert set(MBTI_METHODS) <= set(METHODS) and set(ROLEPLAY_METHODS) <= set(METHODS)
    assert {
        METHODS[m].aggregator for m in ("speculative", "scr_k2", "scr_k4", "scr_k8", "fused_mixture")
    } == {"mixture"}
    assert METHODS["fused_product"].aggregator == "product"
    assert [METHODS[f"scr_k{k}"].chunk_size for k in (2, 4, 8)] == [2, 4, 8]
    assert generate_kwargs("scr_k4") == {
        "sampler": "scr",
        "aggregator": "mixture",
        "chunk_size": 4,
        "candidates": 8,
    }
    assert METHODS["scr_k2"].likelihood_mode == "chunk" and METHODS["speculative"].likelihood_mode == "token"
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        get_method("nope")


def test_via_methods_name_the_sampler_of_a_composition(engine):
    """via:SAMPLER/PROPOSAL/K:SPEC samples the compose:SPEC target with another sampler and proposal."""
    m = get_method("via:scr/anchor/4:product,lam=1,plausibility=0.1")
    assert m.name == "via:scr/anchor/4:product,lam=1,weights=given,anchor=base,plausibility=0.1"
    assert generate_kwargs(m) == {
        "sampler": "scr",
        "aggregator": "product",
        "chunk_size": 4,
        "candidates": 8,
        "proposal": "anchor",
    }
    composed = mbti_target(engine, "compose:product,lam=1,plausibility=0.1", "ENTJ", experts=tiny_experts)
    assert mbti_target(engine, m, "ENTJ", experts=tiny_experts) == composed
    one = get_method("via:scr/head/2x1:product")  # a candidate count after the chunk size
    assert (one.chunk_size, one.candidates, one.proposal) == (2, 1, "head") and "/2x1:" in one.name
    bad_ones = ("via:scr/anchor:product", "via:beam/anchor/4:product", "via:scr/anchor/k:product")
    for bad in (*bad_ones, "via:scr/anchor/4xk:product"):
        with pytest.raises(ValueError, match="SAMPLER/PROPOSAL/K"):
            get_method(bad)


def test_mbti_targets(engine):
    t = mbti_target(engine, "fused_product", "ENTJ", experts=tiny_experts)
    assert (
        [a.name for a in t.attributes] == list("ENTJ") and t.aggregator == "product" and t.anchor == Policy()
    )
    assert mbti_target(engine, "scr_k4", "ENTJ", experts=tiny_experts).aggregator == "mixture"
    base = mbti_target(engine, "base", "ENTJ")
    assert base == alone(Policy()) and base == Target.single(Policy()) and not base.attributes
    prompt = mbti_target(engine, "prompt", "ENTJ").anchor
    assert prompt == prompt_policy("ENTJ") and all(TRAITS[c] in prompt.system for c in "ENTJ")
    ex = mbti_target(engine, "expert_TF", "ENTJ", experts=tiny_experts).anchor  # T: first side -> "x"
    assert ex == tiny_experts("T").num and ex.adapter == "x"
    assert mbti_target(engine, "expert_EI", "ISFP", experts="prompted").anchor == Policy(system=TRAITS["I"])
    with pytest.raises(ValueError, match="not registered"):
        mbti_target(engine, "billy", "ENTJ")
    with pytest.raises(ValueError, match="not an MBTI method"):
        mbti_target(engine, "expert_profile", "ENTJ")


def test_billy_and_roleplay(engine):
    vecs = PersonaVectors({c: torch.full((2, 32), float(i)) for i, c in enumerate(TRAITS)})
    name = register_merged_vector(engine, vecs, "ENTJ")
    t = mbti_target(engine, "billy", "ENTJ", layer=1, alpha=0.5)
    assert t.anchor == Policy(steering=Steer(name, 1, 0.5))
    assert torch.allclose(engine.vectors[name], vecs.merge(list("ENTJ")))
    # the strength in the name wins over the caller's; the name is canonical
    assert get_method("billy:alpha=4.0").name == "billy:alpha=4"
    t4 = mbti_target(engine, "billy:alpha=4", "ENTJ", layer=1, alpha=0.5)
    assert t4.anchor == Policy(steering=Steer(name, 1, 4.0))
    with pytest.raises(ValueError, match="must be a number"):
        get_method("billy:alpha=strong")

    def rp(profile, personality):
        attrs = [
            Attribute.expert("x", None, name="personality", template="a {prompt}"),
            Attribute.expert("y", None, name="profile", template="a {prompt}"),
        ]
        return attrs, Policy(template="a {prompt}")

    assert roleplay_target(engine, "base", "p", "q", experts=rp).anchor == Policy(template="a {prompt}")
    assert roleplay_target(engine, "expert_profile", "p", "q", experts=rp).anchor.adapter == "y"
    assert roleplay_target(engine, "scr_k8", "p", "q", experts=rp).aggregator == "mixture"
    # a composition: its aggregator, lam, weight rule and plausibility; the role-play prompt stays the anchor
    t = roleplay_target(
        engine, "compose:product,lam=0.5,weights=sum1,anchor=prompt,plausibility=0.1", "p", "q", experts=rp
    )
    assert (t.aggregator, t.lam, t.plausibility) == ("product", 0.5, 0.1)
    assert t.anchor == Policy(template="a {prompt}") and [a.weight for a in t.attributes] == [0.5, 0.5]
    assert [a.num.adapter for a in t.attributes] == ["x", "y"]
    with pytest.raises(ValueError, match="not a role-play method"):
        roleplay_target(engine, "prompt", "p", "q", experts=rp)


# ---- likelihood: exact against from-scratch forwards --------------------------------------------------
def _scratch_target(engine, target, cont, mode):
    """The target's score written out from uncached single-policy forwards (tests/oracle.py)."""

    def lp(p, t):  # [V] float64
        return _scratch_logprobs(engine, p, PROMPT, tuple(cont[:t]))

    w = torch.tensor(target.normalised_weights(), dtype=torch.float64)
    mix = target.aggregator == "mixture"
    if mode == "token":
        total = 0.0
        for t, c in enumerate(cont):
            r = (
                torch.stack([lp(a.num, t) - lp(a.den, t) for a in target.attributes], -1) * target.lam
            )  # [V, n]
            agg = torch.logsumexp(r + w.log(), -1) if mix else (r * w).sum(-1)
            total += float(torch.log_softmax(lp(target.anchor, t) + agg, -1)[c])
        return total

    def tot(p):
        return sum(float(lp(p, t)[c]) for t, c in enumerate(cont))

    r = torch.tensor([target.lam * (tot(a.num) - tot(a.den)) for a in target.attributes], dtype=torch.float64)
    return tot(target.anchor) + float(torch.logsumexp(r + w.log(), 0) if mix else (r * w).sum())


@pytest.mark.parametrize("aggregator", ["product", "mixture"])
def test_target_loglik_exact(engine, aggregator):
    attrs = (
        Attribute.expert("x", "a b", 1.0),
        Attribute(Policy(model="other", template="b {prompt}"), Policy(), 0.5),
        Attribute(Policy(steering=Steer("v", 1, 2.0)), Policy(system="a"), 2.0),
    )
    target = Target(attrs, aggregator, lam=0.7, anchor=Policy(system="b"))
    cont = [3, 4, 4, 1]
    for mode in ("token", "chunk"):
        assert target_loglik(engine, target, PROMPT, cont, mode) == pytest.approx(
            _scratch_target(engine, target, cont, mode), abs=1e-4
        )
    lp = policy_token_logprobs(engine, [attrs[2].num, attrs[0].num], PROMPT, cont)  # [2, 4]
    ref = [
        float(_scratch_logprobs(engine, attrs[2].num, PROMPT, tuple(cont[:t]))[c]) for t, c in enumerate(cont)
    ]
    assert torch.allclose(lp[0].double(), torch.tensor(ref, dtype=torch.float64), atol=1e-5)


def test_options_batched_and_blocked(engine):
    """Options of different lengths in one batch = one at a time = split into blocks."""
    target = Target((Attribute.expert("y", None, template="a {prompt}"),), "mixture")
    options = [[3], [4, 3, 3], [1, 4]]
    from mpg.likelihood import target_logliks

    for mode in ("token", "chunk"):
        together, _ = target_logliks(engine, target, PROMPT, options, mode)
        blocked, _ = target_logliks(engine, target, PROMPT, options, mode, block=1)
        single = [target_loglik(engine, target, PROMPT, o, mode) for o in options]
        assert torch.allclose(together, torch.tensor(single, dtype=torch.float64), atol=1e-5)
        assert torch.allclose(together, blocked, atol=1e-5)
    with pytest.raises(ValueError, match="empty continuation"):
        target_loglik(engine, target, PROMPT, [], "token")
    with pytest.raises(ValueError, match="unknown likelihood mode"):
        target_loglik(engine, target, PROMPT, [3], "sequence")


def test_scorer_over_many_prompts(engine, monkeypatch):
    """Cached context heads (lengths differ per policy, some empty) give each prompt's own log-probs."""
    import mpg.scoring

    monkeypatch.setattr(mpg.scoring, "SHARED_HEAD_MIN", 1)  # this tiny model's heads are 2-3 tokens
    pols = [
        Policy(),
        Policy(adapter="x", system="a b", template="a {prompt}"),
        Policy(model="other"),
        Policy(steering=Steer("v", 0, 1.5), template="b b {prompt}"),
    ]
    prompts = ["a b a", "b", "a a b b"]
    scorer = PolicyScorer(engine, pols, prompts)
    caches = engine.registry.head_caches
    for c in caches.values():
        c.entries.clear()
    scorer.logprobs(0, [[3]])
    stored = sum(len(c.entries) for c in caches.values())
    hits = sum(c.hits for c in caches.values())
    scorer.logprobs(1, [[3]])
    assert stored > 0 and sum(c.hits for c in caches.values()) > hits  # the next prompt reuses the heads
    for i, prompt in enumerate(prompts):
        for _ in range(2):  # the rolled-back cache gives the same again
            lp, _, _ = scorer.logprobs(i, [[3, 4], [1]], full=False)  # [4, 2, 2]
            ref, _, _ = policy_logprobs(engine, pols, prompt, [[3, 4], [1]], full=False)
            assert torch.allclose(lp, ref, atol=1e-5) and lp[:, 1, 1].eq(0).all()


def test_policy_alone_is_its_own_logprob(engine):
    p = Policy(adapter="x", system="b")
    lp = policy_logprobs(engine, [p], PROMPT, [[3, 4]], full=False)[0]  # [1, 1, 2]
    for mode in ("token", "chunk"):
        assert target_loglik(engine, alone(p), PROMPT, [3, 4], mode) == pytest.approx(
            float(lp.sum()), abs=1e-5
        )


# ---- questionnaire ---------------------------------------------------------------------------------------
ITEMS = [
    {"id": 1, "statement": "a", "dimension": "E/I", "keyed": "E"},
    {"id": 2, "statement": "b", "dimension": "E/I", "keyed": "I"},
    {"id": 3, "statement": "a b", "dimension": "S/N", "keyed": "N"},
    {"id": 4, "statement": "b a", "dimension": "T/F", "keyed": "F"},
    {"id": 5, "statement": "b b", "dimension": "P/J", "keyed": "J"},
]


def test_accuracy_on_a_known_table():
    # ENTJ: agrees with E-, N-, J-keyed items, disagrees with the I- and F-keyed ones: all right.
    entj = {"1": (0.0, -1.0), "2": (-2.0, 0.0), "3": (0.0, -1.0), "4": (-1.0, 0.0), "5": (0.0, -3.0)}
    # ISFP answered exactly like ENTJ: every item wrong, every letter flipped.
    res = accuracy({"ENTJ": entj, "ISFP": entj}, ITEMS)
    assert res["per_axis"]["EI"] == {"acc": 0.5, "ci95": res["per_axis"]["EI"]["ci95"], "n": 4, "correct": 2}
    assert res["items"]["n"] == 10 and res["items"]["correct"] == 5
    assert res["full_type"]["predicted"] == {"ENTJ": "ENTJ", "ISFP": "ENTJ"}
    assert res["full_type"]["acc"] == 0.5 and res["full_type"]["n"] == 2
    lo, hi = res["full_type"]["ci95"]
    assert 0 < lo < 0.5 < hi < 1
    # E/I evidence: item 1 (+1 toward E) vs item 2 (Disagree by 2 with an I-keyed item: +2 toward E).
    tie = {**entj, "1": (0.0, 0.0), "2": (0.0, 0.0)}
    res = accuracy({"ENTJ": tie}, ITEMS)
    assert res["full_type"]["predicted"]["ENTJ"] == "?NTJ" and res["per_axis"]["EI"]["correct"] == 0


def test_load_questionnaire_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_questionnaire(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"statement": "x", "dimension": "E/I", "keyed": "N"}]))
    with pytest.raises(ValueError, match="not on"):
        load_questionnaire(bad)
    bad.write_text(json.dumps([{"statement": "x", "dimension": "E/Q", "keyed": "E"}]))
    with pytest.raises(ValueError, match="unknown questionnaire dimension"):
        load_questionnaire(bad)


def test_run_questionnaire_tiny(engine, tmp_path):
    """Reduced run: scores equal the likelihood module's, scr_k* share one chunk score, JSON round-trips."""
    path = tmp_path / "q.json"
    path.write_text(json.dumps(ITEMS))
    vecs = PersonaVectors(
        {c: torch.randn(2, 32, generator=torch.Generator().manual_seed(i)) for i, c in enumerate(TRAITS)}
    )
    methods = ["base", "prompt", "expert_SN", "fused_product", "speculative", "scr_k2", "scr_k8", "billy"]
    options = ("a", "b a")  # the tiny vocabulary has no Agree / Disagree
    res = run_questionnaire(
        engine,
        methods,
        ["ENTJ", "ISFP"],
        path,
        experts=tiny_experts,
        vectors=vecs,
        layer=1,
        alpha=1.0,
        max_items=4,
        options=options,
        progress=False,
    )
    json.loads(json.dumps(res))
    assert res["scores"]["scr_k2"] == res["scores"]["scr_k8"]
    assert set(res["scores"]["base"]["ENTJ"]) == {"1", "2", "3", "4"}
    assert (
        res["methods"]["fused_product"]["items"]["n"] == 8 and res["methods"]["billy"]["full_type"]["n"] == 2
    )
    item = ITEMS[2]
    for m, mode in (
        ("speculative", "token"),
        ("scr_k2", "chunk"),
        ("expert_SN", "token"),
        ("billy", "token"),
    ):
        target = mbti_target(engine, m, "ISFP", experts=tiny_experts, layer=1, alpha=1.0)
        want = [target_loglik(engine, target, item_prompt(item), o, mode) for o in options]
        assert res["scores"][m]["ISFP"]["3"] == pytest.approx(want, abs=1e-4)
    assert TYPES[0] == "ESTJ" and len(set(TYPES)) == 16


def test_option_scores_modes_differ_for_composed(engine):
    target = Target(
        (Attribute.expert("x", None, template="a {prompt}"), Attribute.expert("y", None)), "mixture"
    )
    pols = [target.anchor, *(x for a in target.attributes for x in (a.num, a.den))]
    index = {p: i for i, p in enumerate(dict.fromkeys(pols))}
    lp, tokens, mask = policy_logprobs(engine, list(index), PROMPT, [[3, 4], [4]])
    tok, _ = option_scores(target, index, lp, tokens, mask, "token")
    chunk, _ = option_scores(target, index, lp, tokens, mask, "chunk")
    assert tok.shape == chunk.shape == (2,)
    assert not torch.allclose(tok, chunk) and math.isfinite(float(chunk.sum()))
