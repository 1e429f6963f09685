"""The validation step's hot part: log-probs of drafted tokens under every policy.

Shapes: P policies, ... leading batch dims (sequences, candidates), T drafted positions, V vocabulary.
"""

from __future__ import annotations

import torch

__all__ = ["token_logprobs_fused", "token_logprobs_reference"]


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
