"""The MOD-style reference: token-level p_1 with every policy in its own sequential forward.

Not part of the library: the baseline `benchmarks/record/speed.py` measures the engine against
(`tests/test_scoring.py` checks that it samples what `fused` samples). This is how the public MOD code decodes (Shi et al., NeurIPS 2024): n+1 policies, each run one after
another with its own KV cache, no batching across policies or prompts. It samples the same law as
`fused` (and, for a given seed, the same tokens up to float rounding), so it is the baseline the speed
benchmark measures the engine's batching, kernels and speculative samplers against.
"""

from __future__ import annotations

import time

import torch

from mpg.distributions import sample
from mpg.samplers import SequenceStats
from mpg.tokens import eos_token_ids

__all__ = ["mod_style_generate"]


@torch.inference_mode()
def mod_style_generate(
    engine,
    prompt: str,
    target,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    eos_token_id=None,
) -> tuple[list[int], SequenceStats]:
    """One prompt, one policy at a time. Same random stream as `engine.generate(..., seed=seed)`'s first prompt."""
    t0 = time.perf_counter()
    table = engine.policy_table(target, [prompt])
    # one single-row group (own cache, own forward, PEFT's own adapter path) per unique policy
    singles = [
        engine.build_scorer_rows([[(p, ctx[0])]], multi_lora=False).groups[0]
        for p, ctx in zip(table.policies, table.contexts)
    ]
    eos = eos_token_ids(engine.models["base"], engine.tokenizer, eos_token_id)
    rng = torch.Generator().manual_seed(int(seed) * 1_000_003)
    y: list[int] = []
    st = SequenceStats()
    while len(y) < max_new_tokens and not (y and y[-1] in eos):
        lp = torch.stack([torch.log_softmax(g.feed([y])[0, 0].float(), -1) for g in singles])  # [P, V]
        for g in singles:
            g.commit([len(y) + 1])
        p = table.rows.token_logprobs(lp.unsqueeze(1), temperature, top_p)[0]  # [V]
        y.append(int(sample(p, torch.rand(1, generator=rng))[0]))
        st.rounds += 1
    st.new_tokens = len(y)
    st.model_calls = sum(g.forward_passes for g in singles)
    st.wall_time_s = time.perf_counter() - t0
    return y, st
