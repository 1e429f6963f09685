"""Batched incremental scoring equals scoring from scratch: ragged commits (holes), compaction, branches,
dropping finished sequences; the multi-LoRA and validation kernels equal their references."""

import pytest
import torch
from oracle import _scratch_logprobs

import mpg.scoring as scoring
from mpg.kernels.lora import (
    MultiLoRA,
    lora_delta_gathered,
    lora_delta_reference,
    lora_delta_stacked,
    stack_adapters,
)
from mpg.kernels.validation import token_logprobs_fused, token_logprobs_reference
from mpg.policies import Attribute, Policy, Target

PROMPTS = ["a b", "b", "a a b a"]
TARGET = Target(
    (
        Attribute.expert("x", "b a b", 1.0),
        Attribute.expert("y", None, 1.0),
        Attribute(Policy(model="other", system="a"), Policy(system="a"), 1.0),
    ),
    "product",
)


def scratch(engine, policies, prompt, prefix):
    return torch.stack(
        [_scratch_logprobs(engine, p, prompt, tuple(prefix)).float() for p in policies]
    )  # [P, V]


def assert_matches(engine, policies, logits, ys, chunks, prompts=PROMPTS):
    """logits [B, P, n, K+1, V] from the scorer vs from-scratch log-probs at every prefix y + chunk[:t]."""
    for b, (prompt, y) in enumerate(zip(prompts, ys)):
        for j, chunk in enumerate(chunks[b] if chunks is not None else [[]]):
            for t in range(len(chunk) + 1):
                ref = scratch(engine, policies, prompt, y + chunk[:t])
                got = torch.log_softmax(logits[b, :, j, t], -1)
                torch.testing.assert_close(got, ref, atol=3e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "compact_at, head_min",
    [(10**9, 10**9), (1, 10**9), (10**9, 1)],
    ids=["holes", "compacting", "shared-heads"],
)
@torch.inference_mode()
def test_ragged_batch_scoring_with_commits_equals_scratch(engine, monkeypatch, compact_at, head_min):
    """head_min 1: every policy's rows share their common context head (prefilled once per policy;
    the anchor's contexts share none), the rest as in the plain prefill."""
    monkeypatch.setattr(scoring, "COMPACT_MIN_HOLES", compact_at)
    monkeypatch.setattr(scoring, "COMPACT_FRACTION", 0.0)
    monkeypatch.setattr(scoring, "SHARED_HEAD_MIN", head_min)
    table = engine.policy_table(TARGET, PROMPTS)
    scorer, policies = engine.build_scorer(table), table.policies
    # the shared-heads prefill is two passes (heads once per policy, then every row's tail), else one
    assert scorer.groups[0].forward_passes == (2 if head_min == 1 else 1)
    assert len(scorer.groups) == 2 and len(policies) == 6 and scorer.groups[0].rows == 3 * 5
    ys = [[], [], []]
    chunks = [[[3, 4, 3]], [[4, 4, 4]], [[3, 3, 3]]]
    assert_matches(engine, policies, scorer.score(ys, torch.tensor(chunks)), ys, chunks)
    # sequence 0 keeps one token, sequence 1 all three plus a bonus, sequence 2 nothing but a redraw
    ys = [[3], [4, 4, 4, 2], [4]]
    scorer.commit([len(y) for y in ys], [1, 1, 1])
    chunks = [[[4, 4]], [[3, 3]], [[2, 3]]]
    assert_matches(engine, policies, scorer.score(ys, torch.tensor(chunks)), ys, chunks)
    ys = [[3, 4, 4], [4, 4, 4, 2], [4, 2, 3]]  # 0: both + nothing more; 1: none; 2: both + nothing
    scorer.commit([len(y) for y in ys], [1, 1, 1])
    assert_matches(engine, policies, scorer.score(ys), ys, None)  # a plain (fused) step
    ys = [y + [3] for y in ys]
    scorer.commit([len(y) for y in ys])
    scorer.select([0, 2])  # sequence 1 finished
    ys_left = [ys[0], ys[2]]
    logits = scorer.score(ys_left, torch.tensor([[[4]], [[4]]]))
    for b, (prompt, y) in enumerate(zip([PROMPTS[0], PROMPTS[2]], ys_left)):
        for t in range(2):
            ref = scratch(engine, policies, prompt, y + [4][:t])
            torch.testing.assert_close(torch.log_softmax(logits[b, :, 0, t], -1), ref, atol=3e-5, rtol=1e-4)
    if compact_at == 1:
        assert all(g.valid.all(1).any() for g in scorer.groups)  # compaction left a row without holes


@torch.inference_mode()
def test_cached_context_heads_score_like_scratch(engine, monkeypatch):
    """A second scorer for the same policies takes every context head from the engine's head cache
    (no head is fed again) and still scores exactly as from scratch; so does a generate() after it."""
    monkeypatch.setattr(scoring, "SHARED_HEAD_MIN", 1)
    engine.registry.head_caches.clear()
    table = engine.policy_table(TARGET, PROMPTS)
    engine.build_scorer(table)
    cache = engine.registry.head_caches["base"]
    stored, misses = len(cache.entries), cache.misses
    assert stored > 0 and cache.hits == 0
    scorer = engine.build_scorer(table)
    assert cache.hits == stored and cache.misses == misses and len(cache.entries) == stored
    ys = [[3], [], [4, 4]]
    chunks = [[[3, 4], [4, 4]], [[4, 3], [3, 3]], [[3, 3], [2, 3]]]
    assert_matches(engine, table.policies, scorer.score(ys, torch.tensor(chunks)), ys, chunks)
    kw = dict(target=TARGET, sampler="speculative", max_new_tokens=6, seed=2, eos_token_id=[])
    cached = engine.generate(PROMPTS, **kw).token_ids
    monkeypatch.setattr(engine, "head_cache_size", 0)
    assert engine.generate(PROMPTS, **kw).token_ids == cached


@torch.inference_mode()
def test_branches_score_like_one_by_one_and_the_winner_continues(engine):
    table = engine.policy_table(TARGET, PROMPTS)
    scorer, policies = engine.build_scorer(table), table.policies
    ys = [[3], [4], [3, 3]]
    scorer.score(ys)  # some history first
    scorer.commit([len(y) for y in ys])
    chunks = [[[3, 4], [4, 4], [2, 3]], [[4, 3], [3, 3], [4, 4]], [[3, 3], [4, 3], [3, 4]]]
    many = scorer.score(ys, torch.tensor(chunks))  # [B, P, 3, 3, V]
    assert_matches(engine, policies, many, ys, chunks)
    # keep branch 2 of sequence 0 (both tokens), branch 1 of sequence 1 (one token), nothing of sequence 2
    ys = [ys[0] + chunks[0][1], ys[1] + chunks[1][0][:1], ys[2]]
    scorer.commit([len(y) for y in ys], [2, 1, 0])
    assert all((g.col_branch == 0).all() for g in scorer.groups)
    nxt = [[[3]], [[4]], [[4]]]
    assert_matches(engine, policies, scorer.score(ys, torch.tensor(nxt)), ys, nxt)


def test_batched_generation_equals_one_prompt_at_a_time(engine):
    prompts = ["a b", "b b a", "a"]
    for sampler in ("fused", "speculative", "scr"):
        kw = dict(target=TARGET, sampler=sampler, max_new_tokens=6, seed=3, eos_token_id=1, chunk_size=2)
        together = engine.generate(prompts, batch_size=3, **kw)
        alone = engine.generate(prompts, batch_size=1, **kw)
        assert together.token_ids == alone.token_ids, sampler


def test_stacked_and_gathered_lora_equal_the_masked_reference():
    g = torch.Generator().manual_seed(0)
    N, T, I, O = 7, 3, 16, 12
    ranks, scale = [4, 2, 4], [2.0, 0.5, 1.0]
    A = [torch.randn(r, I, generator=g) for r in ranks]
    B = [torch.randn(O, r, generator=g) for r in ranks]
    x = torch.randn(N, T, I, generator=g)
    row = torch.tensor([0, 1, 2, 3, 1, 0, 3])
    ref = lora_delta_reference(x, A, B, scale, row)  # [N, T, O]
    A_cat, B_cat = stack_adapters(A, B, scale)
    owner = torch.cat([torch.full((r,), i + 1) for i, r in enumerate(ranks)])
    mask = (owner.unsqueeze(0) == row.unsqueeze(1)).float().unsqueeze(1)  # [N, 1, R_tot]
    torch.testing.assert_close(lora_delta_stacked(x, A_cat, B_cat, mask), ref, atol=1e-5, rtol=1e-5)
    A_rows = torch.zeros(4, I, 4)
    B_rows = torch.zeros(4, 4, O)
    for i, (a, b, s) in enumerate(zip(A, B, scale)):
        A_rows[i + 1, :, : a.shape[0]] = a.T
        B_rows[i + 1, : a.shape[0]] = b.T * s
    torch.testing.assert_close(lora_delta_gathered(x, A_rows[row], B_rows[row]), ref, atol=1e-5, rtol=1e-5)
    assert ref[row == 0].abs().max() == 0 and ref[row != 0].abs().min() >= 0 and ref.abs().max() > 0.1


@pytest.mark.parametrize("method", ["stacked", "gathered"])
@torch.inference_mode()
def test_multi_lora_forward_equals_peft_mixed_batch(engine, method):
    model = engine.models["base"]
    ids = torch.tensor([[3, 4, 4, 3]] * 4)
    names = ["x", None, "y", "x"]
    ref = model(input_ids=ids, adapter_names=[n or "__base__" for n in names]).logits
    ml = MultiLoRA(model, method)
    with ml.rows(names):
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    assert (ref[0] - ref[1]).abs().max() > 1e-3  # adapters do change the output
    assert not any(m["module"].disable_adapters for m in ml.layers)  # PEFT state restored
    # the hooks stay registered (one per layer, however many MultiLoRA objects) and change nothing
    # outside `rows`; a second layout and the cached first one still match PEFT
    again = model(input_ids=ids, adapter_names=[n or "__base__" for n in names]).logits
    assert torch.equal(again, ref)
    ml2 = MultiLoRA(model, method)
    for names_now in (names[::-1], names):
        with ml2.rows(names_now):
            got = model(input_ids=ids).logits
        want = model(input_ids=ids, adapter_names=[n or "__base__" for n in names_now]).logits
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert all(len(m["module"]._forward_hooks) == 1 for m in ml.layers)


def test_fused_token_logprobs_equal_the_reference():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 2, 3, 4, 50, generator=g) * 4  # [P, B, n, T, V]
    toks = torch.randint(0, 50, (2, 3, 4), generator=g).expand(5, -1, -1, -1)
    torch.testing.assert_close(token_logprobs_fused(logits, toks), token_logprobs_reference(logits, toks))


@torch.inference_mode()
def test_scores_on_the_anchors_plausible_set_give_the_product_target_of_full_scores(engine):
    """score(support=...) runs the output embedding over the vocabulary for the anchor only and for the
    other rows on the anchor's plausible tokens: the product target (and so fused's law) built from it
    equals the one built from full logits, token after token, on two models (groups)."""
    import dataclasses

    table = engine.policy_table(dataclasses.replace(TARGET, plausibility=0.6), PROMPTS)  # 5 tokens
    rows = table.rows
    full_scorer, cut_scorer = engine.build_scorer(table), engine.build_scorer(table)
    assert cut_scorer.head_skippable and len(cut_scorer.groups) == 2
    ys, g, skipped = [[] for _ in PROMPTS], torch.Generator().manual_seed(0), 0
    for _ in range(4):
        full = full_scorer.score(ys)  # [B, P, 1, 1, V]
        cut = cut_scorer.score(ys, support=(rows.anchor, rows.plausibility))
        for b in range(len(PROMPTS)):
            want = rows.token_logprobs(torch.log_softmax(full[b, :, 0].float(), -1), 1.0, 1.0)  # [1, V]
            got = rows.token_logprobs(torch.log_softmax(cut[b, :, 0].float(), -1), 1.0, 1.0)
            torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
            assert torch.equal(cut[b, rows.anchor], full[b, rows.anchor])
            skipped += int((cut[b, rows.num[0], 0, 0] == 0).sum())
            ys[b].append(int(torch.multinomial(want[0].exp(), 1, generator=g)))
        full_scorer.commit([len(y) for y in ys])
        cut_scorer.commit([len(y) for y in ys])
    assert skipped > 0  # the other rows really were scored on fewer tokens


@pytest.mark.parametrize("sampler", ["fused", "speculative"])
def test_token_samplers_score_a_plausible_product_on_the_plausible_set_only(engine, monkeypatch, sampler):
    """fused and speculative ask for full logits only where the target needs them: not for a product
    kept to the anchor's plausible set; a mixture (its terms need true normalisers) gets full logits."""
    import dataclasses

    supports = []
    score = scoring.MultiPolicyScorer.score_rows

    def recording(self, *a, **k):
        sup = k.get("support")  # (anchor rows, alpha, rows in full) or None
        supports.append(None if sup is None else (tuple(sup[0].tolist()), sup[1]))
        return score(self, *a, **k)

    monkeypatch.setattr(scoring.MultiPolicyScorer, "score_rows", recording)
    for aggregator, want in (("product", ((0,), 0.1)), ("mixture", None)):
        supports.clear()
        t = dataclasses.replace(TARGET, aggregator=aggregator, plausibility=0.1)
        out = engine.generate("a b", target=t, sampler=sampler, max_new_tokens=3, seed=0, eos_token_id=[])
        assert len(out.token_ids[0]) == 3 and supports and set(supports) == {want}


def test_mod_style_reference_samples_what_fused_samples(engine):
    from benchmarks.mod_style import mod_style_generate

    for seed in range(4):
        ref, st = mod_style_generate(engine, "a b", TARGET, max_new_tokens=5, seed=seed, eos_token_id=1)
        fused = engine.generate(
            "a b", target=TARGET, sampler="fused", max_new_tokens=5, seed=seed, eos_token_id=1
        )
        assert ref == fused.token_ids[0]
        assert st.model_calls >= 6 * len(ref)  # one forward per policy per token (plus prefills)
