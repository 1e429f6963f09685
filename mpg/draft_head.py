"""The draft head: one small decoder block that predicts the composed target's next feature vector.

For a product target every policy ends in the base's output embedding W, so the target's logits are
W g + const with g the composed feature (`mpg.aggregators.product_features`): the persona lives in g.
The head reads the features of the last few positions together with the token that followed each
(EAGLE, Li et al. 2024: fc(feature ; embedding) -> one decoder layer) and predicts the next feature;
W of the prediction is the draft. One head therefore drafts every persona of its base.

Attention is causal within a band of `window` positions, in training and in drafting alike: the
drafter keeps only the last `window` true (feature, token) pairs of each sequence, so its state is a
few vectors per sequence and rolling it back is dropping them. The base's token embedding and output
embedding are borrowed, never stored in the head's file.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .fingerprint import same_weights, weight_fingerprint

__all__ = [
    "HEAD_CONFIG",
    "HEAD_WEIGHTS",
    "SHIPPED_HEAD",
    "DraftHead",
    "DraftHeadConfig",
    "band_mask",
    "load_draft_head",
]

HEAD_CONFIG = "draft_head.json"
HEAD_WEIGHTS = "draft_head.safetensors"
SHIPPED_HEAD = Path(__file__).parent / "draft_heads" / "default"  # the embedded default base's head


@dataclass(frozen=True)
class DraftHeadConfig:
    """Sizes of a head, and what base it belongs to (hidden size and vocabulary must match it)."""

    hidden_size: int
    vocab_size: int
    num_heads: int = 8
    intermediate_size: int = 1024
    window: int = 16
    rope_theta: float = 10000.0
    base: str = ""  # a label of the base it was trained on (informational)

    @classmethod
    def for_base(cls, model, **overrides) -> "DraftHeadConfig":
        c = model.config
        h = c.hidden_size
        heads = next(n for n in (overrides.pop("num_heads", None), 8, 4, 2, 1) if n and h % n == 0)
        return cls(
            hidden_size=h,
            vocab_size=c.vocab_size,
            num_heads=heads,
            intermediate_size=overrides.pop("intermediate_size", 2 * h),
            base=overrides.pop("base", getattr(c, "_name_or_path", "") or ""),
            **overrides,
        )


class _RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def band_mask(valid: torch.Tensor, window: int) -> torch.Tensor:
    """Which positions each position attends to: itself and the `window` - 1 before it, valid ones only.

    valid: [B, L] bool (False: left padding)  ->  [B, L, L] bool
    """
    L = valid.shape[1]
    i = torch.arange(L)
    band = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < window)  # [L, L]
    allowed = band.to(valid.device)[None] & valid[:, None, :]  # [B, L, L]
    return allowed | torch.eye(L, dtype=torch.bool, device=valid.device)[None]  # padding sees itself


def _rope(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary positions. x: [B, heads, L, d]; pos: [B, L] (each row counts from its first valid
    position, so left padding changes nothing) -> same shape as x."""
    d = x.shape[-1]
    freq = theta ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)  # [d/2]
    ang = pos.to(x.device, torch.float32)[:, None, :, None] * freq  # [B, 1, L, d/2]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


class DraftHead(nn.Module):
    """features [B, L, H] and the tokens after them [B, L] -> predicted next features [B, L, H]."""

    def __init__(self, config: DraftHeadConfig):
        super().__init__()
        self.config = config
        H, F = config.hidden_size, config.intermediate_size
        self.fc = nn.Linear(2 * H, H, bias=False)
        self.attn_norm = _RMSNorm(H)
        self.qkv = nn.Linear(H, 3 * H, bias=False)
        self.o = nn.Linear(H, H, bias=False)
        self.mlp_norm = _RMSNorm(H)
        self.gate_up = nn.Linear(H, 2 * F, bias=False)
        self.down = nn.Linear(F, H, bias=False)
        self.out_scale = nn.Parameter(torch.ones(H))

    def forward(
        self, features: torch.Tensor, token_embeds: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """features, token_embeds: [B, L, H]; valid: [B, L] bool (None: all) -> [B, L, H].

        Position j reads feature f_j and the embedding of token x_{j+1}; its output predicts f_{j+1}.
        The prediction is f_j plus the block's output: features move slowly along a text."""
        B, L, H = features.shape
        nh = self.config.num_heads
        if valid is None:
            valid = torch.ones(B, L, dtype=torch.bool, device=features.device)
        x = self.fc(torch.cat([features, token_embeds], -1))  # [B, L, H]
        q, k, v = (
            self.qkv(self.attn_norm(x)).view(B, L, 3, nh, H // nh).permute(2, 0, 3, 1, 4)
        )  # [B, nh, L, d]
        pos = (valid.long().cumsum(1) - 1).clamp(min=0)  # [B, L]
        q, k = _rope(q, pos, self.config.rope_theta), _rope(k, pos, self.config.rope_theta)
        mask = band_mask(valid, self.config.window)[:, None]  # [B, 1, L, L]
        a = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, nh, L, d]
        x = x + self.o(a.transpose(1, 2).reshape(B, L, H))
        gate, up = self.gate_up(self.mlp_norm(x)).chunk(2, -1)  # [B, L, F] each
        x = x + self.down(nn.functional.silu(gate) * up)
        return features + x * self.out_scale

    @classmethod
    def fresh(cls, config: DraftHeadConfig, seed: int = 0) -> "DraftHead":
        """Random weights from `seed` (out_scale small: a fresh head predicts features near its input)."""
        head = cls(config)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in head.parameters():
                if p.dim() == 2:
                    p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
            head.out_scale.fill_(0.1)
        return head

    def save(self, folder: str | Path, card: dict | None = None, dtype: torch.dtype = torch.bfloat16) -> None:
        """The head's weights (in `dtype`) and config in `folder` (and `card`, what it was trained on, in
        its config). Loading gives float32 weights whatever the file holds."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().to(dtype).contiguous() for k, v in self.state_dict().items()},
            folder / HEAD_WEIGHTS,
        )
        (folder / HEAD_CONFIG).write_text(json.dumps({**asdict(self.config), "card": card or {}}, indent=1))


def load_draft_head(folder: str | Path, model=None, dtype: torch.dtype | None = None) -> DraftHead:
    """A saved head; with `model`, checked against that base (hidden size, vocabulary) first."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / HEAD_CONFIG).exists():
        raise FileNotFoundError(f"no draft head in {folder} (no {HEAD_CONFIG})")
    raw = json.loads((folder / HEAD_CONFIG).read_text())
    raw.pop("card", None)
    config = DraftHeadConfig(**raw)
    if model is not None:
        c = model.config
        if (c.hidden_size, c.vocab_size) != (config.hidden_size, config.vocab_size):
            raise ValueError(
                f"the draft head in {folder} is for a base of hidden size {config.hidden_size} and "
                f"vocabulary {config.vocab_size}; this base has {c.hidden_size} and {c.vocab_size}"
            )
        card = json.loads((folder / HEAD_CONFIG).read_text()).get("card", {})
        if "weight_fingerprint" in card and not same_weights(
            card["weight_fingerprint"], weight_fingerprint(model)
        ):
            raise ValueError(f"the draft head in {folder} was trained on another base (weight fingerprint)")
    head = DraftHead(config)
    head.load_state_dict(load_file(folder / HEAD_WEIGHTS))
    head = head.eval().requires_grad_(False)
    return head.to(dtype) if dtype is not None else head
