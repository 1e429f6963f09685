"""Exact target distributions by enumeration (SPEC section 4), independent of the engine's scorer.

Every policy's next-token log-probs are computed from scratch (one uncached forward of context +
prefix per policy), and the target is written out with its own formulas, not the engine's.
"""

from __future__ import annotations

import itertools
import math
from functools import cache

import torch

from mpg.registry import is_peft


def scratch_forward(engine, policy, ids) -> tuple[torch.Tensor, torch.Tensor]:
    """One uncached forward of token ids under the policy (its adapter and steering): the last position's
    logits [V] and the input to the output head there (the final normed hidden state) [H]."""
    model = engine.models[policy.model]
    kw = {"adapter_names": [policy.adapter or "__base__"]} if is_peft(model) else {}
    blocks = (model.get_base_model() if is_peft(model) else model).model.layers
    features = []
    hooks = [
        blocks[s.layer].register_forward_hook(
            lambda m, a, out, d=s.alpha * engine.vectors[s.vector][s.layer]: out + d
        )
        for s in policy.steering or ()
    ]
    hooks.append(model.get_output_embeddings().register_forward_hook(lambda m, a, out: features.append(a[0])))
    try:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([list(ids)]), **kw).logits[0, -1]  # [V]
    finally:
        for h in hooks:
            h.remove()
    return logits, features[-1][0, -1]


def _scratch_logprobs(engine, policy, prompt, prefix: tuple) -> torch.Tensor:
    ids = engine.context_ids(policy, prompt) + list(prefix)
    return torch.log_softmax(scratch_forward(engine, policy, ids)[0].double(), -1)  # [V]


def exact_distribution(
    engine,
    target,
    prompt: str,
    n_tokens: int,
    k: int,
    eos: int | None,
    temperature: float = 1.0,
    max_log_weight: list | None = None,
) -> dict[tuple, float]:
    """p_k over complete responses of at most n_tokens, chunk by chunk (k = 1: the token-level p_1).

    If `max_log_weight` is a list, its first item is set to the largest log W(c) = log p~(c | h) -
    log q(c | h) over every reachable chunk boundary h and whole chunk c: the tightest true bound for
    SCR's fixed-threshold mode without salvage (which only judges whole chunks).
    """
    attrs = target.attributes
    w = [a.weight for a in attrs]
    if target.aggregator == "mixture":
        w = [x / sum(w) for x in w]
    vocab = engine.models["base"].get_output_embeddings().weight.shape[0]

    @cache
    def lp(policy, prefix):
        return _scratch_logprobs(engine, policy, prompt, prefix)

    def chunk_lp(policy, prefix, chunk):
        return sum(float(lp(policy, prefix + chunk[:t])[c]) for t, c in enumerate(chunk))

    alpha = getattr(target, "plausibility", 0.0)
    guard = getattr(target, "guard", "anchor")
    if alpha and guard != "anchor" and k != 1:
        raise ValueError(f"guard={guard} is defined at token level only (k = 1)")

    def below(probs, c):
        """probs[c] < alpha x max(probs), on a probability vector (float64)."""
        return float(probs[c]) < alpha * float(probs.max())

    def token_implausible(prefix, c):
        """Token c after prefix is outside the guard's plausible set (mpg.policies.GUARDS)."""
        anchor = lp(target.anchor, prefix).exp()  # [V]
        nums = [lp(a.num, prefix).exp() for a in attrs]  # n x [V]
        if guard == "anchor":
            return below(anchor, c)
        if guard == "union":  # kept if plausible to the anchor or to any numerator
            return below(anchor, c) and all(below(num, c) for num in nums)
        if guard == "mixture":  # plausible under (anchor + sum_i num_i) / (n + 1)
            return below((anchor + sum(nums)) / (len(nums) + 1), c)
        raise ValueError(guard)

    def implausible(prefix, chunk):
        """Some token of the chunk is outside the plausible set at its position."""
        return bool(alpha) and any(token_implausible(prefix + chunk[:t], c) for t, c in enumerate(chunk))

    def log_target(prefix, chunk):
        if implausible(prefix, chunk):
            return -math.inf
        ratios = [
            target.lam * (chunk_lp(a.num, prefix, chunk) - chunk_lp(a.den, prefix, chunk)) for a in attrs
        ]
        if target.aggregator == "product":
            agg = sum(wi * r for wi, r in zip(w, ratios))
        else:
            agg = math.log(sum(wi * math.exp(r) for wi, r in zip(w, ratios)))
        return (chunk_lp(target.anchor, prefix, chunk) + agg) / temperature

    def chunks(length):
        others = [v for v in range(vocab) if v != eos]
        out = list(itertools.product(others, repeat=length))
        if eos is not None:
            for m in range(length):
                out += [c + (eos,) for c in itertools.product(others, repeat=m)]
        return out

    dist: dict[tuple, float] = {}

    def walk(prefix, mass):
        cands = chunks(min(k, n_tokens - len(prefix)))
        logits = torch.tensor([log_target(prefix, c) for c in cands], dtype=torch.float64)
        if max_log_weight is not None:
            q = target.draft_policy
            for c in cands:
                a = log_target(prefix, c) - chunk_lp(q, prefix, c)
                max_log_weight[0] = max(max_log_weight[0], a)
        probs = torch.softmax(logits, 0).tolist()
        for c, p in zip(cands, probs):
            y = prefix + c
            if (eos is not None and y[-1] == eos) or len(y) == n_tokens:
                dist[y] = dist.get(y, 0.0) + mass * p
            else:
                walk(y, mass * p)

    walk((), 1.0)
    return dist


def proposal_distribution(engine, policy, prompt, n_tokens, eos) -> dict[tuple, float]:
    """The proposal's own law over responses (what a sampler that ignored the target would give)."""
    from mpg.policies import Target

    t = Target.single(policy)
    return exact_distribution(engine, t, prompt, n_tokens, 1, eos)


def tv(p: dict, q: dict) -> float:
    keys = set(p) | set(q)
    return 0.5 * sum(abs(p.get(x, 0.0) - q.get(x, 0.0)) for x in keys)


def empirical(samples) -> dict[tuple, float]:
    out: dict[tuple, float] = {}
    for s in samples:
        out[tuple(s)] = out.get(tuple(s), 0.0) + 1.0 / len(samples)
    return out


def tv_tolerance(p: dict, n_samples: int, delta: float = 1e-3) -> float:
    """A TV bound that an exact sampler exceeds with probability < delta.

    E[TV(p_hat, p)] <= 0.5 * sum_i sqrt(p_i (1 - p_i) / S) (Jensen), and TV of the empirical law is
    1/S-Lipschitz in each sample, so McDiarmid adds sqrt(log(1/delta) / (2 S)).
    """
    mean_bound = 0.5 * sum(math.sqrt(x * (1 - x) / n_samples) for x in p.values())
    return mean_bound + math.sqrt(math.log(1 / delta) / (2 * n_samples))


def check_sampler(
    engine, target, sampler, n_tokens, k, prompt, eos, samples, expect_k=None, temperature=1.0, **kw
):
    """Draw `samples` responses with `sampler` and assert their TV to the exact target (p_1, or p_k with
    expect_k) is within the sampling tolerance; also that the test could tell the target from the
    proposal. Returns (output, TV)."""
    p = exact_distribution(engine, target, prompt, n_tokens, expect_k or k, eos, temperature)
    q = proposal_distribution(engine, target.draft_policy, prompt, n_tokens, eos)
    tol = tv_tolerance(p, samples)
    assert tv(p, q) > 2 * tol, "test would not tell the target from the proposal"
    out = engine.generate(
        [prompt] * samples,
        target=target,
        sampler=sampler,
        max_new_tokens=n_tokens,
        seed=1234,
        eos_token_id=eos,
        chunk_size=k,
        temperature=temperature,
        **kw,
    )
    dist = tv(empirical(out.token_ids), p)
    assert dist < tol, f"{sampler}: TV to the exact target {dist:.3f} >= tolerance {tol:.3f}"
    return out, dist
