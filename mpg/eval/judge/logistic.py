"""L2-regularised logistic regression in plain torch, its strength chosen by grouped cross-validation.

float64, full-batch L-BFGS on standardised features: deterministic, and convex, so the optimum does not
depend on the start. `choose_l2` picks the strength with the best k-fold accuracy, folds split by group
(the two texts of a preference pair stay together).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

__all__ = ["FOLDS", "L2_GRID", "Logistic", "choose_l2", "fit_logistic"]

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
FOLDS = 5


@dataclass
class Logistic:
    """p(y=1 | x) = sigmoid(((x - mean) / scale) . weight + bias)."""

    weight: torch.Tensor  # [D]
    bias: torch.Tensor  # []
    mean: torch.Tensor  # [D]
    scale: torch.Tensor  # [D]
    l2: float = 0.0

    def proba(self, x: torch.Tensor) -> torch.Tensor:
        """[N, D] features -> [N] probabilities."""
        z = ((x.double() - self.mean) / self.scale) @ self.weight + self.bias
        return torch.sigmoid(z).float()

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.{k}": getattr(self, k).contiguous() for k in ("weight", "bias", "mean", "scale")}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], prefix: str, l2: float) -> Logistic:
        return cls(*(t[f"{prefix}.{k}"].double() for k in ("weight", "bias", "mean", "scale")), l2=l2)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float, max_iter: int = 200) -> Logistic:
    """Mean binary cross-entropy + l2/2 |w|^2 (bias unpenalised) on standardised features, by
    full-batch L-BFGS in float64: deterministic, and convex so the optimum does not depend on the start.
    x: [N, D], y: [N] in {0, 1}."""
    if x.dim() != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
        raise ValueError(
            f"fit_logistic needs x [N, D] and y [N] with N > 0, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    x, y = x.double(), y.double()
    mean = x.mean(0)  # [D]
    scale = x.std(0, unbiased=False).clamp_min(1e-6)  # [D]
    xs = (x - mean) / scale  # [N, D]
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xs @ w + b, y) + 0.5 * l2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    return Logistic(w.detach(), b.detach(), mean, scale, l2)


def choose_l2(
    x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor, grid=L2_GRID, folds: int = FOLDS, seed: int = 0
) -> tuple[float, dict]:
    """L2 strength with the best k-fold accuracy; folds split by group (both texts of a pair stay
    together). x: [N, D], y: [N], groups: [N] int. Returns (l2, {l2: cv accuracy})."""
    ids = sorted(set(groups.tolist()))
    random.Random(seed).shuffle(ids)
    fold_of = {g: i % folds for i, g in enumerate(ids)}
    fold = torch.tensor([fold_of[g] for g in groups.tolist()])  # [N]
    if len(ids) < folds:
        return grid[len(grid) // 2], {}
    scores = {}
    for l2 in grid:
        right = 0
        for k in range(folds):
            test = fold == k
            model = fit_logistic(x[~test], y[~test], l2)
            right += int(((model.proba(x[test]) > 0.5).float() == y[test].float()).sum())
        scores[l2] = right / len(y)
    best = max(grid, key=lambda l2: (scores[l2], l2))  # ties: the stronger regulariser
    return best, scores
