"""The validation step's hot part: log-probs of drafted tokens under every policy, and chunk weights.

Shapes: P policies, ... leading batch dims (sequences, candidates), T drafted positions, V vocabulary.
"""

from __future__ import annotations

import torch

from ..aggregators import chunk_log_weights

__all__ = ["chunk_weights", "token_logprobs_fused", "token_logprobs_reference"]


def token_logprobs_reference(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Full log-softmax, then gather. logits: [..., T, V]; tokens: [..., T] -> [..., T]."""
    lp = torch.log_softmax(logits.float(), dim=-1)  # [..., T, V]
    return lp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def token_logprobs_fused(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Gather the drafted logit and subtract logsumexp: no [..., T, V] log-prob tensor is written.

    logits: [..., T, V]; tokens: [..., T] -> [..., T]
    """
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).float()  # [..., T]
    return picked - torch.logsumexp(logits.float(), dim=-1)


def chunk_weights(
    token_lp_fn,
    logits: torch.Tensor,
    tokens: torch.Tensor,
    q_tok: torch.Tensor,
    anchor: int,
    num: list[int],
    den: list[int],
    weights: torch.Tensor,
    aggregator: str,
    lam: float,
    temperature: float,
    plausibility: float = 0.0,
) -> torch.Tensor:
    """Cumulative log importance weights a_t of drafted chunks (SPEC section 3, SCR step 2).

    logits: [P, ..., T, V] every policy's next-token logits at the drafted positions;
    tokens: [..., T]; q_tok: [..., T] proposal log-probs of the drafted tokens  ->  a: [..., T]
    """
    tok_lp = token_lp_fn(logits, tokens.expand(*logits.shape[:-1]))  # [P, ..., T]
    n = tok_lp[num].movedim(0, -2)  # [..., n, T]
    d = tok_lp[den].movedim(0, -2)  # [..., n, T]
    top = None
    if plausibility > 0:
        lg = logits[anchor].float()  # [..., T, V]
        top = lg.amax(-1) - torch.logsumexp(lg, -1)  # [..., T]
    return chunk_log_weights(
        tok_lp[anchor], n, d, q_tok, weights, aggregator, lam, temperature, top, plausibility
    )
