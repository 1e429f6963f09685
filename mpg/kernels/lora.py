"""Several LoRA adapters on the rows of one batch: delta[row] = scale_a * (x[row] @ A_a^T) @ B_a^T, a = adapter(row).

Shapes: N rows, T positions, I input features, O output features, r rank, n adapters. Row adapter
index 0 means "no adapter" (bare base weights); adapter i >= 1 is stack entry i - 1.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = [
    "MultiLoRA",
    "lora_delta_gathered",
    "lora_delta_reference",
    "lora_delta_stacked",
    "rank_owner",
    "stack_adapters",
]


def lora_delta_reference(
    x: torch.Tensor,
    A: list[torch.Tensor],
    B: list[torch.Tensor],
    scale: list[float],
    row_adapter: torch.Tensor,
) -> torch.Tensor:
    """One masked pass per adapter (what PEFT's mixed-adapter batch does).

    x: [N, T, I]; A[i]: [r_i, I]; B[i]: [O, r_i]; row_adapter: [N] in 0..n  ->  [N, T, O]
    """
    out = x.new_zeros(*x.shape[:-1], B[0].shape[0])  # [N, T, O]
    for i in range(len(A)):
        rows = (row_adapter == i + 1).nonzero().squeeze(1)  # [N_i]
        if rows.numel():
            out[rows] = (x[rows] @ A[i].T) @ B[i].T * scale[i]  # [N_i, T, O]
    return out


def stack_adapters(
    A: list[torch.Tensor], B: list[torch.Tensor], scale: list[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate the adapters along the rank: A_cat [I, sum r], B_cat [sum r, O] (scale folded into B)."""
    A_cat = torch.cat([a.T for a in A], 1)  # [I, R_tot]
    B_cat = torch.cat([b.T * s for b, s in zip(B, scale)], 0)  # [R_tot, O]
    return A_cat.contiguous(), B_cat.contiguous()


def rank_owner(A: list[torch.Tensor]) -> torch.Tensor:
    """[R_tot] which adapter (1..n) owns each column of the concatenated rank."""
    return torch.cat([torch.full((a.shape[0],), i + 1, dtype=torch.long) for i, a in enumerate(A)])


def lora_delta_stacked(
    x: torch.Tensor, A_cat: torch.Tensor, B_cat: torch.Tensor, row_mask: torch.Tensor
) -> torch.Tensor:
    """All adapters in two matmuls: project onto every adapter's rank, zero the columns a row does not own.

    x: [N, T, I]; A_cat: [I, R_tot]; B_cat: [R_tot, O]; row_mask: [N, 1, R_tot] (1 where the row owns the
    column)  ->  [N, T, O]. The extra work is n-fold on a rank-r product, tiny next to the base matmul,
    and it replaces n gathers/scatters and 2n small matmuls with two dense ones.
    """
    return ((x @ A_cat) * row_mask) @ B_cat


def lora_delta_gathered(x: torch.Tensor, A_rows: torch.Tensor, B_rows: torch.Tensor) -> torch.Tensor:
    """Per-row adapter matrices gathered once per batch: two batched matmuls.

    x: [N, T, I]; A_rows: [N, I, r]; B_rows: [N, r, O] (zeros for rows without an adapter)  ->  [N, T, O]
    """
    return torch.bmm(torch.bmm(x, A_rows), B_rows)


ROW_CACHE_SIZE = 16  # row layouts whose per-layer tensors MultiLoRA keeps


def _add_active_delta(module, args, output):
    """Forward hook of a LoRA layer: inside `MultiLoRA.rows`, add the rows' deltas; else change nothing."""
    active = getattr(module, "_mpg_lora_active", None)
    if active is None:
        return None
    multi, spec, t = active
    return output + multi._delta(spec, t, args[0]).to(output.dtype)


class MultiLoRA:
    """Runs a PEFT model's LoRA adapters per row with `lora_delta_stacked` instead of PEFT's masked loop.

    While `rows(adapter_names)` is active the PEFT LoRA layers are disabled (they compute the base
    projection only) and a forward hook on each adds the stacked delta for the rows' adapters.
    Only vanilla LoRA on nn.Linear is handled; `supports(model)` says whether this model qualifies.
    """

    def __init__(self, peft_model, method: str = "stacked"):
        from peft.tuners.lora import Linear as LoraLinear

        if method not in ("stacked", "gathered"):
            raise ValueError(f"unknown multi-LoRA method {method!r}")
        self.method = method
        self.names: list[str] = sorted(
            {n for m in peft_model.modules() if isinstance(m, LoraLinear) for n in m.lora_A}
        )
        self.index = {n: i + 1 for i, n in enumerate(self.names)}  # 0 = no adapter
        self.layers = []
        for m in peft_model.modules():
            if not isinstance(m, LoraLinear) or not m.lora_A:
                continue
            have = [n for n in self.names if n in m.lora_A]
            A = [m.lora_A[n].weight.detach() for n in have]  # [r, I] each
            B = [m.lora_B[n].weight.detach() for n in have]  # [O, r] each
            scale = [float(m.scaling[n]) for n in have]
            owner = torch.tensor([self.index[n] for n in have])[
                rank_owner(A) - 1
            ]  # [R_tot] adapter id per column
            A_cat, B_cat = stack_adapters(A, B, scale)
            r_max = max(a.shape[0] for a in A)
            A_rows = torch.zeros(
                len(self.names) + 1, A_cat.shape[0], r_max, dtype=A_cat.dtype, device=A_cat.device
            )
            B_rows = torch.zeros(
                len(self.names) + 1, r_max, B_cat.shape[1], dtype=A_cat.dtype, device=A_cat.device
            )
            for n, a, b, s in zip(have, A, B, scale):
                A_rows[self.index[n], :, : a.shape[0]] = a.T
                B_rows[self.index[n], : a.shape[0]] = b.T * s
            self.layers.append(
                {
                    "module": m,
                    "A_cat": A_cat,
                    "B_cat": B_cat,
                    "owner": owner.to(A_cat.device),
                    "A_rows": A_rows,
                    "B_rows": B_rows,
                }
            )
        self._row_cache: dict[tuple[int, ...], list] = {}

    @staticmethod
    def supports(peft_model) -> bool:
        from peft.tuners.lora import Linear as LoraLinear

        layers = [m for m in peft_model.modules() if isinstance(m, LoraLinear)]
        return bool(layers) and all(
            not m.lora_variant and not m.merged and not m.lora_embedding_A for m in layers
        )

    def _delta(self, spec, t, x: torch.Tensor) -> torch.Tensor:
        """The rows' LoRA deltas of one layer: x [N, T, I] -> [N, T, O] (t: that layer's row tensors)."""
        if self.method == "stacked":
            return lora_delta_stacked(x.to(spec["A_cat"].dtype), spec["A_cat"], spec["B_cat"], t)
        A_rows, B_rows = t
        return lora_delta_gathered(x.to(A_rows.dtype), A_rows, B_rows)

    def _row_tensors(self, row_adapter: tuple[int, ...]) -> list:
        """Per layer, what the hook needs for these rows: the stacked kernel's column mask [N, 1, R_tot],
        or the gathered kernel's (A_rows [N, I, r], B_rows [N, r, O]). Cached by the rows' adapters (a
        decode step repeats the previous step's rows), at most ROW_CACHE_SIZE layouts."""
        hit = self._row_cache.get(row_adapter)
        if hit is not None:
            return hit
        out = []
        for spec in self.layers:
            ra = torch.tensor(row_adapter, device=spec["A_cat"].device)  # [N]
            if self.method == "stacked":
                out.append(
                    (spec["owner"].unsqueeze(0) == ra.unsqueeze(1)).to(spec["A_cat"].dtype).unsqueeze(1)
                )  # [N, 1, R_tot]
            else:
                out.append((spec["A_rows"][ra], spec["B_rows"][ra]))  # [N, I, r], [N, r, O]
        if len(self._row_cache) >= ROW_CACHE_SIZE:
            self._row_cache.clear()
        self._row_cache[row_adapter] = out
        return out

    def rows(self, adapter_names: list[str | None]):
        """Context manager: the next forwards run row i with adapter adapter_names[i] (None: bare weights).

        Announced mutation: from the first use on, each PEFT LoRA layer carries one forward hook
        (`_add_active_delta`; registering them on every forward showed up in profiles). Outside this
        context it returns None, which leaves every output as PEFT computed it."""
        row_adapter = tuple(self.index[a] if a is not None else 0 for a in adapter_names)
        return self._rows(self._row_tensors(row_adapter))

    @contextlib.contextmanager
    def _rows(self, per_layer: list):
        for spec, t in zip(self.layers, per_layer):
            m = spec["module"]
            if not getattr(m, "_mpg_lora_hooked", False):  # one hook per layer, whichever MultiLoRA asks
                m.register_forward_hook(_add_active_delta)
                m._mpg_lora_hooked = True
            # plain attributes, set in __dict__: nn.Module.__setattr__'s checks showed up in profiles
            m.__dict__["_mpg_lora_active"] = (self, spec, t)
            m.__dict__["_disable_adapters"] = True
        try:
            yield
        finally:
            for spec in self.layers:
                spec["module"].__dict__["_mpg_lora_active"] = None
                spec["module"].__dict__["_disable_adapters"] = False
