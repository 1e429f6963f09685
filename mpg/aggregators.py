"""Aggregators and the target's log-densities: pure tensor functions (SPEC section 2).

Shapes: n = attributes, V = vocabulary, T = chunk positions. `...` is any leading batch shape.
"""

from __future__ import annotations

import math

import torch

from .policies import GUARDS

__all__ = [
    "GUARDS",
    "aggregate",
    "chunk_log_weights",
    "guard_cut",
    "implausible",
    "plausible",
    "product_features",
    "token_target_logits",
]


def aggregate(ratios: torch.Tensor, weights: torch.Tensor, aggregator: str, lam: float) -> torch.Tensor:
    """A_w(lam * l_1, ..., lam * l_n).

    ratios:  [..., n] log density ratios l_i
    weights: [n]      (mixture weights already normalised to sum 1)
    returns  [...]
    """
    scaled = lam * ratios  # [..., n]
    if aggregator == "product":
        return (scaled * weights).sum(-1)
    if aggregator == "mixture":
        # log sum_i w_i exp(l_i); w_i = 0 contributes log 0 = -inf, which logsumexp ignores.
        return torch.logsumexp(scaled + torch.log(weights), dim=-1)
    raise ValueError(f"unknown aggregator {aggregator!r}")


def plausible(logits: torch.Tensor, anchor_lp: torch.Tensor, alpha: float) -> torch.Tensor:
    """The target kept to the anchor's plausible tokens: those the anchor gives at least `alpha` times
    the probability of its most likely token (the adaptive plausibility constraint of contrastive
    decoding, Li et al. 2023). The composition then only chooses among tokens the anchor finds
    fluent; the anchor's argmax always stays, so the set is never empty. alpha 0: no constraint.

    logits, anchor_lp: [..., V]  ->  [..., V] (-inf outside the set)
    """
    if alpha <= 0:
        return logits
    out = implausible(anchor_lp, anchor_lp.amax(-1, keepdim=True), alpha)  # [..., V]
    return logits.masked_fill(out, float("-inf"))


def implausible(lp: torch.Tensor, top: torch.Tensor, alpha: float) -> torch.Tensor:
    """The constraint's rule, shared by the token and chunk levels: lp below log(alpha) + top, with
    lp and top on the same scale (log-probs, or raw logits: the normaliser cancels). alpha > 0.

    lp: [...]; top: broadcastable to lp  ->  [...] bool
    """
    return lp < top + math.log(alpha)


def guard_cut(anchor_lp: torch.Tensor, num_lp: torch.Tensor, alpha: float, guard: str) -> torch.Tensor:
    """The tokens a guard removes (GUARDS): True where the token is implausible at alpha > 0.

    anchor_lp: [..., V]    log-probs of the anchor (normalised: "mixture" adds probabilities)
    num_lp:    [..., n, V] log-probs of the attributes' numerators (read by "union" and "mixture")
    returns    [..., V]    bool
    """
    if guard == "anchor":
        return implausible(anchor_lp, anchor_lp.amax(-1, keepdim=True), alpha)
    if guard == "union":
        # cut only what neither the anchor nor any numerator finds plausible: a token the policy that
        # carries an axis would write stays, one no fluent policy would write goes
        anchor_cut = implausible(anchor_lp, anchor_lp.amax(-1, keepdim=True), alpha)  # [..., V]
        num_cut = implausible(num_lp, num_lp.amax(-1, keepdim=True), alpha).all(-2)  # [..., V]
        return anchor_cut & num_cut
    if guard == "mixture":
        every = torch.cat([anchor_lp.unsqueeze(-2), num_lp], -2)  # [..., n+1, V]
        mix = torch.logsumexp(every, -2)  # [..., V] log of (n+1) x the mixture: the scale cancels
        return implausible(mix, mix.amax(-1, keepdim=True), alpha)
    raise ValueError(f"unknown guard {guard!r}; choose one of {', '.join(GUARDS)}")


def token_target_logits(
    anchor_lp: torch.Tensor,
    num_lp: torch.Tensor,
    den_lp: torch.Tensor,
    weights: torch.Tensor,
    aggregator: str,
    lam: float,
    plausibility: float = 0.0,
    guard: str = "anchor",
) -> torch.Tensor:
    """Unnormalised log p~_1 over the vocabulary (k = 1 target).

    anchor_lp:        [..., V]    log pi_0(. | h)
    num_lp, den_lp:   [..., n, V] log num_i(. | h), log den_i(. | h)
    returns           [..., V]    log pi_0 + A_w(lam * (num - den)), kept to the guard's plausible
                                  tokens when plausibility > 0 (`guard_cut`; "anchor": the anchor's
                                  own); log_softmax of it is log p_1
    """
    ratios = (num_lp - den_lp).transpose(-1, -2)  # [..., V, n]
    logits = anchor_lp + aggregate(ratios, weights, aggregator, lam)  # [..., V]
    if plausibility <= 0:
        return logits
    return logits.masked_fill(guard_cut(anchor_lp, num_lp, plausibility, guard), float("-inf"))


def product_features(
    anchor_h: torch.Tensor, num_h: torch.Tensor, den_h: torch.Tensor, weights: torch.Tensor, lam: float
) -> torch.Tensor:
    """The product target as one feature vector: g = h_0 + lam * sum_i w_i (h_num,i - h_den,i).

    When every policy ends in the same bias-free output head W (experts that adapt only the attention,
    as the shipped ones do), log pi(. | h) = W h - logZ, so log p~_1 = W g + const: the composed target
    is one head matmul away from g, whatever the persona (the plausibility cut still comes from W h_0).

    anchor_h:        [..., H] each policy's final (normed) hidden state at a position
    num_h, den_h:    [..., n, H]
    weights:         [n] the product's weights
    returns          [..., H]
    """
    return anchor_h + lam * (weights[:, None] * (num_h - den_h)).sum(-2)


def chunk_log_weights(
    anchor_tok: torch.Tensor,
    num_tok: torch.Tensor,
    den_tok: torch.Tensor,
    proposal_tok: torch.Tensor,
    weights: torch.Tensor,
    aggregator: str,
    lam: float,
    temperature: float = 1.0,
    anchor_top: torch.Tensor | None = None,
    plausibility: float = 0.0,
) -> torch.Tensor:
    """Cumulative importance log-weights a_t = log p~_t(c_1..c_t) / T - log q_T(c_1..c_t), t = 1..T.

    anchor_tok:    [..., T]    log pi_0(c_t | h, c_<t)
    num_tok/den_tok: [..., n, T]
    proposal_tok:  [..., T]    log q_T(c_t | ...) of the distribution the chunk was actually drawn from
    anchor_top:    [..., T]    log max_v pi_0(v | h, c_<t); needed when plausibility > 0: a chunk
                               prefix holding a token below plausibility x that has target mass 0
    returns        [..., T]
    """
    anchor_cum = anchor_tok.cumsum(-1)  # [..., T]
    ratio_cum = (num_tok - den_tok).cumsum(-1).transpose(-1, -2)  # [..., T, n]
    target = anchor_cum + aggregate(ratio_cum, weights, aggregator, lam)  # [..., T]
    if plausibility > 0:
        if anchor_top is None:
            raise ValueError("plausibility > 0 needs anchor_top, the anchor's top log-prob per position")
        cut = implausible(anchor_tok, anchor_top, plausibility).cummax(-1).values  # [..., T]
        target = target.masked_fill(cut, float("-inf"))
    return target / temperature - proposal_tok.cumsum(-1)
