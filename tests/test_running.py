"""Continuous batching: sequences that join a running batch (or leave it) get what they get alone."""

import pytest
import torch

from mpg.policies import Attribute, Policy, Target
from mpg.running import RunningBatch
from mpg.samplers import SAMPLERS, SamplerConfig, Sequence, SequenceSettings

TARGET = Target(
    (Attribute.expert("x", "b a", 1.0), Attribute.prompted("a a", None, 0.5)), anchor=Policy(system="a")
)


def alone(engine, prompt, seed, sampler, n):
    return engine.generate(
        prompt, target=TARGET, sampler=sampler, seed=seed, max_new_tokens=n, eos_token_id=[]
    ).token_ids[0]


def seq(seed, n, settings):  # the random stream generate() gives prompt 0 of a call with this seed
    return Sequence(n, torch.Generator().manual_seed(seed * 1_000_003), settings)


def join(engine, run, prompts, seqs, stops, tags=None):
    tags = tags or [None] * len(prompts)
    return run.join(
        engine.prepare([(TARGET, p, s, st, t) for p, s, st, t in zip(prompts, seqs, stops, tags)])
    )


@pytest.mark.parametrize("sampler", ["fused", "speculative", "scr"])
def test_joining_and_leaving_mid_run_changes_no_output(engine, sampler):
    """Three sequences of different prompt lengths, lengths and seeds join at different steps; each
    one's tokens equal its solo generate() (up to float rounding, which these inputs do not reach)."""
    settings = SequenceSettings(sampler, 1.0, 1.0, SamplerConfig(), frozenset())
    run = RunningBatch(SAMPLERS[sampler], engine.tokenizer)
    plan = {0: [("a b", 1, 9)], 2: [("b", 2, 5), ("a a b a", 3, 12)], 5: [("b b", 4, 7)]}
    got, members = {}, []
    for step in range(200):
        for prompt, seed, n in plan.get(step, []):
            members += join(engine, run, [prompt], [seq(seed, n, settings)], [[]], tags=[(prompt, seed, n)])
        for m, _ in run.settle():
            if m.finish_reason:
                got[m.tag] = m.tokens
        if not len(run) and step > max(plan):
            break
        if len(run):
            run.step()
    assert set(got) == {job for jobs in plan.values() for job in jobs}
    for (prompt, seed, n), tokens in got.items():
        assert len(tokens) == n
        assert tokens == alone(engine, prompt, seed, sampler, n), (prompt, seed)


def test_cancelled_member_leaves_and_frees_its_rows(engine):
    settings = SequenceSettings("speculative", 1.0, 1.0, SamplerConfig(), frozenset())
    run = RunningBatch(SAMPLERS["speculative"], engine.tokenizer)
    a, b = join(engine, run, ["a b", "b"], [seq(1, 40, settings), seq(2, 40, settings)], [[], []])
    rows = sum(g.rows for g in run.batch.scorer.groups)
    run.step()
    b.cancelled = True
    events = run.settle()
    assert [(m.finish_reason) for m, _ in events if m is b] == ["cancelled"]
    assert len(run) == 1 and run.members[0] is a
    assert sum(g.rows for g in run.batch.scorer.groups) == rows // 2
    assert run.batch.drafter.rows == 1


def test_stop_strings_per_member(engine):
    """Members carry their own stop strings: one stops early, the other runs to its length."""
    settings = SequenceSettings("fused", 1.0, 1.0, SamplerConfig(), frozenset())
    run = RunningBatch(SAMPLERS["fused"], engine.tokenizer)
    full = engine.generate("a b", target=TARGET, sampler="fused", seed=0, max_new_tokens=10, eos_token_id=[])
    word = full.texts[0].split()[1]
    stopped, free = join(
        engine, run, ["a b", "a b"], [seq(0, 10, settings), seq(0, 10, settings)], [[word], []]
    )
    while len(run):
        run.settle()
        if len(run):
            run.step()
    assert stopped.finish_reason == "stop" and stopped.text == full.texts[0][: full.texts[0].find(word)]
    assert free.finish_reason == "length" and free.text == full.texts[0]


MIXTURE = Target((Attribute.expert("x", "b a", 0.7), Attribute.expert("y", "a", 0.3)), "mixture")
PLAUSIBLE = Target(TARGET.attributes, plausibility=0.3)
SEPARATE = Target((Attribute(Policy(model="other", system="b"), Policy(system="b"), 1.0),), proposal=Policy())
# (target, prompt, seed, tokens, temperature, top_p, knobs): several personas and settings in one batch
MIXED = [
    (TARGET, "a b", 1, 9, 1.0, 1.0, {}),
    (MIXTURE, "b", 2, 6, 0.7, 1.0, {"chunk_size": 2}),
    (PLAUSIBLE, "a a b a", 3, 8, 1.0, 0.9, {"chunk_size": 3}),
    (SEPARATE, "b b", 4, 7, 1.3, 1.0, {"adaptive_chunk": True}),
    (TARGET, "a", 5, 5, 0.0, 1.0, {}),
]


@pytest.mark.parametrize("sampler", ["fused", "speculative", "scr"])
def test_one_batch_of_many_targets_and_settings_gives_each_its_solo_tokens(engine, sampler):
    """Sequences of different targets (policies on two models, steering-free and not), temperatures,
    top-p and knobs share one running batch, join at different steps (one of them prefilled in pieces of
    two tokens): each one's tokens equal its solo generate()."""
    from mpg.samplers import SamplerConfig as Config

    run = RunningBatch(SAMPLERS[sampler], engine.tokenizer)
    plan = {0: MIXED[:2], 1: MIXED[2:3], 3: MIXED[3:]}
    pieces, got = [], {}
    if sampler == "scr":  # greedy has no chunk-level law
        plan = {k: [m for m in v if m[4] > 0] for k, v in plan.items()}
    for step in range(300):
        for target, prompt, seed, n, temp, top_p, knobs in plan.get(step, []):
            settings = SequenceSettings(sampler, temp, top_p, Config.from_flat(None, **knobs), frozenset())
            req = (target, prompt, seq(seed, n, settings), [], (prompt, seed))
            pending = engine.prepare([req], prefill=False)
            pieces.append(pending)
        for pending in list(pieces):
            pending.prefill(2)
            if pending.ready:
                run.join(pending)
                pieces.remove(pending)
        for m, _ in run.settle():
            if m.finish_reason:
                got[m.tag] = m.tokens
        if not len(run) and not pieces and step > max(plan):
            break
        if len(run):
            run.step()
    wanted = [m for ms in plan.values() for m in ms]
    assert len(got) == len(wanted)
    for target, prompt, seed, n, temp, top_p, knobs in wanted:
        alone = engine.generate(
            prompt,
            target=target,
            sampler=sampler,
            seed=seed,
            max_new_tokens=n,
            temperature=temp,
            top_p=top_p,
            eos_token_id=[],
            **knobs,
        ).token_ids[0]
        assert got[(prompt, seed)] == alone, (prompt, seed)
