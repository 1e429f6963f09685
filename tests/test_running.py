"""Continuous batching: sequences that join a running batch (or leave it) get what they get alone."""

import pytest
import torch

from mpg.policies import Attribute, Policy, Target
from mpg.running import BatchSettings, RunningBatch
from mpg.samplers import SamplerConfig
from mpg.samplers.common import Sequence

TARGET = Target(
    (Attribute.expert("x", "b a", 1.0), Attribute.prompted("a a", None, 0.5)), anchor=Policy(system="a")
)


def alone(engine, prompt, seed, sampler, n):
    return engine.generate(
        prompt, target=TARGET, sampler=sampler, seed=seed, max_new_tokens=n, eos_token_id=[]
    ).token_ids[0]


def seq(seed, n):  # the random stream generate() gives prompt 0 of a call with this seed
    return Sequence(n, torch.Generator().manual_seed(seed * 1_000_003))


@pytest.mark.parametrize("sampler", ["fused", "speculative", "scr"])
def test_joining_and_leaving_mid_run_changes_no_output(engine, sampler):
    """Three sequences of different prompt lengths, lengths and seeds join at different steps; each
    one's tokens equal its solo generate() (up to float rounding, which these inputs do not reach)."""
    settings = BatchSettings(sampler, 1.0, 1.0, SamplerConfig(), frozenset())
    run = RunningBatch(engine, TARGET, settings)
    plan = {0: [("a b", 1, 9)], 2: [("b", 2, 5), ("a a b a", 3, 12)], 5: [("b b", 4, 7)]}
    got, members = {}, []
    for step in range(200):
        for prompt, seed, n in plan.get(step, []):
            members += run.join([prompt], [seq(seed, n)], [[]], tags=[(prompt, seed, n)])
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
    settings = BatchSettings("speculative", 1.0, 1.0, SamplerConfig(), frozenset())
    run = RunningBatch(engine, TARGET, settings)
    a, b = run.join(["a b", "b"], [seq(1, 40), seq(2, 40)], [[], []])
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
    settings = BatchSettings("fused", 0.0, 1.0, SamplerConfig(), frozenset())
    run = RunningBatch(engine, TARGET, settings)
    full = engine.generate(
        "a b", target=TARGET, sampler="fused", temperature=0, max_new_tokens=10, eos_token_id=[]
    )
    word = full.texts[0].split()[1]
    stopped, free = run.join(["a b", "a b"], [seq(0, 10), seq(0, 10)], [[word], []])
    while len(run):
        run.settle()
        if len(run):
            run.step()
    assert stopped.finish_reason == "stop" and stopped.text == full.texts[0][: full.texts[0].find(word)]
    assert free.finish_reason == "length" and free.text == full.texts[0]
