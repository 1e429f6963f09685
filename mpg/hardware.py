"""What this machine computes fast: native bf16, and the dtype the engine loads a model in by default."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

__all__ = ["bf16_native", "cpu_has_bf16", "cpu_name", "default_dtype"]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16 (without them torch emulates bf16 on the CPU, several times slower)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_native(device: torch.device | str) -> bool:
    """Whether `device` computes in bf16 natively (CUDA with bf16, or a CPU with `cpu_has_bf16`)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and cpu_has_bf16()


def default_dtype(device: torch.device | str) -> torch.dtype:
    """The engine's dtype when none is asked: bfloat16 on a CPU with native bf16, where it was measured
    faster than float32 for plain decoding and for `fused` at batch 1 and 8, with the same persona
    fidelity (docs/results.md, "bf16 on the CPU"), and float32 everywhere else (on CUDA the two were
    not measured side by side)."""
    device = torch.device(device)
    return torch.bfloat16 if device.type == "cpu" and bf16_native(device) else torch.float32
