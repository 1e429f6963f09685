"""A judge on disk (safetensors + json) and the embedders it names, so a saved judge knows how to embed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..creativity import Embedder, hash_embedder, minilm_embedder

__all__ = ["load_judge_files", "make_embedder", "save_judge_files"]


def make_embedder(name: str) -> Embedder:
    """'minilm' or 'hash<dim>' (e.g. 'hash512')."""
    if name == "minilm":
        return minilm_embedder()
    if m := re.fullmatch(r"hash(\d+)", name):
        return hash_embedder(int(m[1]))
    raise ValueError(f"unknown embedder {name!r}; use 'minilm' or 'hash<dim>'")


def save_judge_files(path_stem: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """`path_stem`.safetensors (the tensors) and `path_stem`.json (what kind of judge, its settings)."""
    from safetensors.torch import save_file

    path_stem.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path_stem.with_suffix(".safetensors")))
    path_stem.with_suffix(".json").write_text(json.dumps(meta, indent=2))


def load_judge_files(path_stem: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The (tensors, meta) `save_judge_files` wrote."""
    from safetensors.torch import load_file

    for suffix in (".safetensors", ".json"):
        if not path_stem.with_suffix(suffix).is_file():
            raise FileNotFoundError(f"judge file {path_stem.with_suffix(suffix)} does not exist")
    return load_file(str(path_stem.with_suffix(".safetensors"))), json.loads(
        path_stem.with_suffix(".json").read_text()
    )
