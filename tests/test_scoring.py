"""KV-cached incremental scoring equals scoring from scratch; one mixed-adapter batch equals per-adapter passes."""
import torch

from oracle import _scratch_logprobs

from mpg.policies import Attribute, Policy, Target
from mpg.scoring import PolicyGroup

PROMPT = "a b"
TARGET = Target((Attribute.expert("x", "b a b", 1.0), Attribute.expert("y", None, 1.0),
                 Attribute(Policy(model="other", system="a"), Policy(system="a"), 1.0)), "product")


def scratch(engine, policies, prefix):
    return torch.stack([_scratch_logprobs(engine, p, PROMPT, tuple(prefix)).float() for p in policies])  # [P, V]


def assert_matches(engine, policies, lp, y, chunk):
    """lp [P, m+1, V] from the scorer vs from-scratch log-probs at every prefix y + chunk[:t]."""
    for t in range(len(chunk) + 1):
        ref = scratch(engine, policies, y + chunk[:t])
        torch.testing.assert_close(lp[:, t], ref, atol=2e-5, rtol=1e-4)


@torch.inference_mode()
def test_incremental_scoring_with_rollback_equals_scratch(engine):
    scorer, _, _, policies = engine._build(PROMPT, TARGET, need_drafter=False)
    assert len(scorer.groups) == 2 and len(policies) == 6  # base+x, base+y, base[...] rows; other model
    y = []
    assert_matches(engine, policies, scorer.score(y, torch.tensor([3, 4, 3])), y, [3, 4, 3])
    y = [3]                      # one drafted token accepted, two rejected
    scorer.rollback(len(y))
    assert_matches(engine, policies, scorer.score(y, torch.tensor([4, 4])), y, [4, 4])
    y = [3, 4, 4, 2]             # both accepted plus a bonus token: two pending tokens next time
    scorer.rollback(len(y))
    assert_matches(engine, policies, scorer.score(y, torch.tensor([3])), y, [3])
    y = y + [3]
    scorer.rollback(len(y))
    assert_matches(engine, policies, scorer.score(y), y, [])  # plain one-token (fused) step


@torch.inference_mode()
def test_mixed_adapter_batch_equals_per_adapter_passes(engine):
    model = engine.models["base"]
    adapters = ["x", "y", None, "x"]
    contexts = [[3, 4, 4], [4], [3, 3, 4, 3, 4], [4, 3]]  # different lengths: left padding is exercised
    batched = PolicyGroup(model, adapters, contexts, 0, is_peft=True)
    feed = torch.tensor([[3, 4]]).expand(4, -1)
    out = batched.feed(torch.cat([batched.last_context_token.unsqueeze(1), feed], 1))  # [4, 3, V]
    assert batched.forward_passes == 2  # prefill + this step, for all four rows at once
    for r, (a, c) in enumerate(zip(adapters, contexts)):
        single = PolicyGroup(model, [a], [c], 0, is_peft=True)
        ref = single.feed(torch.tensor([[c[-1], 3, 4]]))
        torch.testing.assert_close(out[r], ref[0], atol=2e-5, rtol=1e-4)
    # and the adapters do differ, so the comparison means something
    assert (out[0] - out[3]).abs().max() > 1e-3


@torch.inference_mode()
def test_forked_scoring_equals_one_by_one(engine):
    scorer, _, _, policies = engine._build(PROMPT, TARGET, need_drafter=False)
    y = [3]
    chunks = torch.tensor([[3, 4], [4, 4], [2, 3]])
    many, _ = scorer.score_many(y, chunks)                    # [P, 3, 3, V]
    for i, c in enumerate(chunks):
        assert_matches(engine, policies, many[:, i], y, c.tolist())
    # the fork left the real caches untouched
    assert_matches(engine, policies, scorer.score(y, torch.tensor([4])), y, [4])
    # adopting copy 1 continues from y + chunks[1] without re-feeding it
    scorer.rollback(len(y))
    many, forks = scorer.score_many(y, chunks)
    scorer.adopt(forks, 3, 1)
    y = y + chunks[1].tolist()
    scorer.rollback(len(y))
    assert all(g.consumed == len(y) for g in scorer.groups)
    assert_matches(engine, policies, scorer.score(y, torch.tensor([3])), y, [3])
