"""Probe: do this CPU's kernels give a row the same bits whatever shares the call with it?

Two checks, each on random data: (1) `linear` over M rows for M = 1..199, grouping the row counts whose
first row comes out bit-identical (one group: batch-invariant); each group printed as [first, last, count]; (2) scaled-dot-product attention of
one query over L keys, against the same keys behind masked padding columns (what a sequence sees when a
batch-mate's longer context pads its cache). Prints and writes JSON.

    .venv/bin/python benchmarks/experiments/probes/row_invariance.py --threads 1 --out out/probe/row_invariance.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root: benchmarks.common

from benchmarks.common import command_line, machine_info, write_json  # noqa: E402


def gemm_groups(dtype: torch.dtype, H: int, n_out: int, max_rows: int = 200) -> list[list[int]]:
    """Row counts 1..max_rows-1 grouped by the bits of row 0 of linear(x[:M], w)."""
    w, x = torch.randn(n_out, H).to(dtype), torch.randn(max_rows, H).to(dtype)  # [n_out, H], [max_rows, H]
    groups: list[tuple[torch.Tensor, list[int]]] = []
    for M in range(1, max_rows):
        row = F.linear(x[:M], w)[0]  # [n_out]
        for bits, ms in groups:
            if torch.equal(bits, row):
                ms.append(M)
                break
        else:
            groups.append((row, [M]))
    return [ms for _, ms in groups]


def attention_pad_invariant(dtype: torch.dtype, L: int, pads=(1, 3, 8, 17, 40), D: int = 64) -> list[bool]:
    """Per pad: is one query's attention over L keys bit-identical with `pad` masked columns in front?"""
    q, k, v = (
        torch.randn(1, 3, 1, D).to(dtype),
        torch.randn(1, 3, L, D).to(dtype),
        torch.randn(1, 3, L, D).to(dtype),
    )
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=torch.zeros(1, 1, 1, L, dtype=dtype))
    out = []
    for pad in pads:
        kp = torch.cat([torch.randn(1, 3, pad, D).to(dtype), k], 2)  # [1, 3, pad+L, D]
        vp = torch.cat([torch.randn(1, 3, pad, D).to(dtype), v], 2)
        mask = torch.zeros(1, 1, 1, pad + L, dtype=dtype)
        mask[..., :pad] = torch.finfo(dtype).min
        out.append(torch.equal(F.scaled_dot_product_attention(q, kp, vp, attn_mask=mask), ref))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="out/probe/row_invariance.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    result = {"threads": args.threads, "gemm_row_groups": {}, "attention_pad_invariant": {}}
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        for H, n_out in ((576, 1536), (576, 49152), (32, 5)):
            groups = gemm_groups(dtype, H, n_out)
            result["gemm_row_groups"][f"{name} {H}x{n_out}"] = [[g[0], g[-1], len(g)] for g in groups]
        result["attention_pad_invariant"][name] = {L: attention_pad_invariant(dtype, L) for L in (20, 60)}
    result.update(machine=machine_info(), command=command_line(__file__, argv))
    print(json.dumps(result, indent=1))
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
