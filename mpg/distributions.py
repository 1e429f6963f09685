"""Temperature, nucleus truncation and inverse-CDF sampling on log-probabilities.

Sampling takes its uniforms from the caller (drawn from one CPU torch.Generator per sequence), so a
seed gives the same output whatever device the logits live on.
"""

from __future__ import annotations

import torch

__all__ = ["residual_logprobs", "sample", "temper"]


def temper(logits: torch.Tensor, temperature: float, top_p: float = 1.0) -> torch.Tensor:
    """log of softmax(logits / T) restricted to its top-p nucleus and renormalised; T = 0: all mass on
    the most likely token (the first of ties), i.e. greedy decoding.

    logits: [..., V] (any normalisation);  returns [..., V] log-probs with -inf outside the nucleus.
    """
    if temperature == 0:
        top = logits.float().argmax(-1, keepdim=True)  # [..., 1]
        return torch.full_like(logits, float("-inf"), dtype=torch.float32).scatter_(-1, top, 0.0)
    lp = torch.log_softmax(logits.float() / temperature, dim=-1)  # [..., V]
    if top_p >= 1.0:
        return lp
    sorted_lp, order = lp.sort(dim=-1, descending=True)  # [..., V]
    mass_before = sorted_lp.exp().cumsum(-1) - sorted_lp.exp()  # probability mass ahead of each token
    drop_sorted = mass_before >= top_p  # the first token is always kept
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return torch.log_softmax(lp.masked_fill(drop, float("-inf")), dim=-1)


def sample(logprobs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw. logprobs: [..., V] normalised; u: [...] uniforms in [0,1). returns [...] ids."""
    cdf = logprobs.exp().cumsum(-1)  # [..., V]
    u = u.to(cdf.device, cdf.dtype).unsqueeze(-1) * cdf[..., -1:]  # [..., 1] guards against cdf[-1] < 1
    idx = torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True).squeeze(-1)
    return idx.clamp_(max=logprobs.shape[-1] - 1)


def residual_logprobs(p_lp: torch.Tensor, q_lp: torch.Tensor) -> torch.Tensor:
    """log norm(max(0, p - q)): where speculative sampling redraws a rejected position. [..., V] -> [..., V].
    Where p == q up to rounding (no residual mass), rejection had probability ~0 and p itself is the law."""
    resid = (p_lp.exp() - q_lp.exp()).clamp_min(0)  # [..., V]
    total = resid.sum(-1, keepdim=True)  # [..., 1]
    return torch.where(total > 0, (resid / total).log(), p_lp)
