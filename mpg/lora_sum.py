"""One LoRA adapter equal to a weighted sum of loaded ones: weight surgery on a PEFT model.

A sum of low-rank products is exactly one low-rank product of the summed rank (`concat_lora`), so the
summed adapter is exact and runs in the engine's multi-LoRA kernel like any other. Used by the
"merged" proposal (`mpg.proposals`), through `Registry.add_lora_sum`.
"""

from __future__ import annotations

import torch

__all__ = ["add_merged_adapter", "concat_lora"]


def concat_lora(
    A: list[torch.Tensor], B: list[torch.Tensor], coef: list[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LoRA equal to a weighted sum of several: B_cat @ A_cat = sum_i coef_i * B_i @ A_i.

    A[i]: [r_i, I], B[i]: [O, r_i] (PEFT's layout; fold each adapter's scaling into coef_i)
    -> A_cat [R, I], B_cat [O, R], R = sum r_i. The coefficient goes on B, so its sign is kept.
    """
    A_cat = torch.cat(A, 0)  # [R, I]
    B_cat = torch.cat([b * c for b, c in zip(B, coef)], 1)  # [O, R]
    return A_cat, B_cat


def _lora_parts(peft_model, coef: dict[str, float]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module name (inside the PEFT-wrapped model) -> (A_cat [R_m, I], B_cat [O, R_m]) of the merge."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    parts = {}
    for name, m in peft_model.base_model.model.named_modules():
        if not isinstance(m, LoraLayer):
            continue
        here = [a for a in coef if a in m.lora_A or a in getattr(m, "lora_embedding_A", {})]
        if not here:
            continue
        for a in here:
            plain = (
                isinstance(m, LoraLinear)
                and a in m.lora_A
                and not getattr(m, "lora_variant", {}).get(a)
                and not getattr(m, "lora_bias", {}).get(a)
                and not m.merged
            )
            if not plain:
                raise ValueError(
                    f"proposal='merged': adapter {a!r} is not a plain LoRA on a linear layer at {name} "
                    "(DoRA, LoRA bias, embedding LoRA or merged weights cannot be summed into one adapter)"
                )
        parts[name] = concat_lora(
            [m.lora_A[a].weight.detach().float() for a in here],  # [r_a, I] each
            [m.lora_B[a].weight.detach().float() for a in here],  # [O, r_a] each
            [coef[a] * float(m.scaling[a]) for a in here],
        )
    return parts


@torch.no_grad()
def add_merged_adapter(peft_model, name: str, coef: dict[str, float]) -> None:
    """Register `name` on the PEFT model: one LoRA (scaling 1) whose delta is sum_a coef[a] * delta_a.

    Every module any merged adapter touches gets rank R = the largest sum of ranks over those modules;
    modules with fewer ranks are zero-padded (zero columns add nothing), so one LoraConfig fits all.
    """
    from peft import LoraConfig

    parts = _lora_parts(peft_model, coef)
    if not parts:
        raise ValueError(f"proposal='merged': adapters {', '.join(coef)} have no LoRA layers to merge")
    rank = max(A.shape[0] for A, _ in parts.values())
    config = LoraConfig(
        r=rank,
        lora_alpha=rank,  # scaling alpha / r = 1: the coefficients and scalings are folded into B
        target_modules=sorted(parts),
        lora_dropout=0.0,
        bias="none",
        inference_mode=True,
    )
    peft_model.add_adapter(name, config)  # the caller (Registry.add_lora_sum) silences PEFT's warning
    modules = dict(peft_model.base_model.model.named_modules())
    for mod_name, (A, B) in parts.items():
        m = modules[mod_name]
        if float(m.scaling[name]) != 1.0:
            raise RuntimeError(f"merged adapter {name!r} got scaling {m.scaling[name]} at {mod_name}, not 1")
        wA, wB = m.lora_A[name].weight, m.lora_B[name].weight  # [rank, I], [O, rank]
        wA.zero_()
        wB.zero_()
        wA[: A.shape[0]] = A.to(wA.dtype)
        wB[:, : B.shape[1]] = B.to(wB.dtype)
        wA.requires_grad_(False)
        wB.requires_grad_(False)
    peft_model.eval()
