"""Golden tokens: fixed seeds give the same tokens for fused, speculative and scr on the tiny model.

The expected ids were produced by the code before the sampler interface and the scorer's layout were
rewritten; a refactor that changes any sampled token (a consumed uniform, a row's arithmetic, a cache
column) fails here, even where the law would still be right and the oracle tests would pass.
"""

import dataclasses

import pytest

from mpg.policies import Attribute, Policy, Target
from mpg.steering import Steer

PRODUCT = Target((Attribute.expert("x", "b a", 1.0), Attribute.prompted("a a", None, 0.5)), "product")
MIXTURE = Target((Attribute.expert("x", "b a", 0.7), Attribute.expert("y", "a", 0.3)), "mixture")
STEERED = Target(
    (Attribute(Policy(adapter="y", system="b", steering=Steer("v", 1, 1.5)), Policy(system="b"), 1.0),),
    "product",
    proposal=Policy(steering=Steer("v", 0, 1.0)),
)
PLAUSIBLE = dataclasses.replace(PRODUCT, plausibility=0.2)
PROMPTS = ["a b", "b", "a a b a"]
CASES = {
    "fused-product": (PRODUCT, dict(sampler="fused")),
    "fused-mixture-t0.7": (MIXTURE, dict(sampler="fused", temperature=0.7)),
    "fused-plausible-topp": (PLAUSIBLE, dict(sampler="fused", top_p=0.9)),
    "speculative-product": (PRODUCT, dict(sampler="speculative", chunk_size=3)),
    "speculative-plausible": (PLAUSIBLE, dict(sampler="speculative", chunk_size=2)),
    "speculative-steered-adaptive": (STEERED, dict(sampler="speculative", adaptive_chunk=True)),
    "scr-product": (PRODUCT, dict(sampler="scr", chunk_size=2, window=8, pilot=4)),
    "scr-mixture-candidates": (MIXTURE, dict(sampler="scr", chunk_size=3, candidates=2, window=8, pilot=4)),
    "scr-plausible-adaptive": (
        PLAUSIBLE,
        dict(sampler="scr", adaptive_chunk=True, max_chunk_size=5, window=8, pilot=4),
    ),
}

GOLDEN = {
    "fused-product": [
        [0, 0, 0, 0, 0, 0, 3, 0, 0, 0],
        [4, 4, 4, 4, 4, 3, 0, 3, 1, 4],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ],
    "fused-mixture-t0.7": [
        [0, 0, 0, 0, 0, 0, 3, 0, 0, 0],
        [4, 4, 4, 4, 4, 4, 2, 4, 4, 4],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ],
    "fused-plausible-topp": [
        [0, 0, 0, 0, 0, 0, 3, 0, 0, 0],
        [4, 4, 4, 4, 4, 4, 2, 4, 4, 4],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ],
    "speculative-product": [
        [0, 2, 0, 0, 0, 0, 4, 1, 2, 4],
        [0, 3, 1, 3, 4, 0, 0, 3, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 4, 0],
    ],
    "speculative-plausible": [
        [0, 0, 0, 0, 0, 3, 4, 4, 4, 4],
        [4, 4, 4, 3, 1, 4, 4, 4, 4, 4],
        [0, 0, 0, 3, 0, 0, 0, 0, 0, 0],
    ],
    "speculative-steered-adaptive": [
        [2, 0, 0, 0, 0, 1, 4, 4, 4, 4],
        [4, 4, 4, 4, 3, 4, 4, 4, 4, 4],
        [0, 0, 0, 1, 0, 3, 4, 0, 0, 0],
    ],
    "scr-product": [
        [2, 0, 0, 0, 0, 0, 3, 0, 4, 3],
        [4, 4, 3, 4, 4, 3, 4, 4, 3, 4],
        [0, 0, 2, 1, 0, 0, 3, 3, 0, 0],
    ],
    "scr-mixture-candidates": [
        [3, 1, 4, 2, 2, 4, 3, 2, 0, 1],
        [4, 4, 4, 4, 4, 4, 4, 4, 4, 2],
        [0, 0, 3, 0, 0, 0, 2, 3, 3, 3],
    ],
    "scr-plausible-adaptive": [
        [4, 2, 1, 0, 4, 2, 1, 1, 3, 4],
        [4, 4, 4, 4, 3, 4, 4, 3, 0, 4],
        [0, 4, 1, 0, 0, 2, 0, 0, 0, 4],
    ],
}


@pytest.mark.parametrize("case", list(CASES))
def test_fixed_seeds_give_the_golden_tokens(engine, case):
    target, kw = CASES[case]
    out = engine.generate(
        PROMPTS, target=target, max_new_tokens=10, seed=11, batch_size=2, eos_token_id=[], **kw
    )
    assert out.token_ids == GOLDEN[case]
