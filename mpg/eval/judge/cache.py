"""Both judges, trained once and reused: saved under out/judges/, keyed by a fingerprint of the data
files, the embedder, which pairs each expert saw, and the training settings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ...personas import AXES, SHIPPED_EXPERTS
from ..creativity import Embedder
from .data import MBTI_FILES, ROLEPLAY_FILES, trained_subset
from .files import make_embedder
from .logistic import FOLDS, L2_GRID
from .mbti import MbtiJudge, train_mbti_judge
from .roleplay import RoleplayJudge, train_roleplay_judge

__all__ = ["JUDGE_VERSION", "load_or_train_judges"]

JUDGE_VERSION = 2  # 2: each file's subset from its expert's metrics.json (was 160 pairs, seed 0 for all)


def _fingerprint(paths: list[Path], settings: dict) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _cached(stem: Path, cls, embed, train):
    """The judge saved at `stem` (same data and settings), else train it and save it there."""
    if stem.with_suffix(".safetensors").is_file():
        return cls.load(stem, embed)
    judge = train()
    judge.save(stem)
    return judge


def _subsets(kind: str, experts: str | Path) -> dict:
    files = (
        [f"mbti/prefs/{MBTI_FILES[a]}" for a in AXES]
        if kind == "mbti"
        else [f"roleplay/prefs/{f}" for f in ROLEPLAY_FILES]
    )
    return {f: list(trained_subset(Path(f) / "train.jsonl", experts)) for f in files}


def _settings(kind: str, embedder: str, experts: str | Path) -> dict:
    return {
        "kind": kind,
        "embedder": embedder,
        "version": JUDGE_VERSION,
        "expert_subsets": _subsets(kind, experts),
        "l2_grid": list(L2_GRID),
        "folds": FOLDS,
    }


def load_or_train_judges(
    data_dir: str | Path = "../shared/data",
    out_dir: str | Path = "out/judges",
    embedder: str = "minilm",
    embed: Embedder | None = None,
    progress: bool = True,
    experts: str | Path = SHIPPED_EXPERTS,
) -> tuple[MbtiJudge, RoleplayJudge]:
    """Both judges, from out_dir when a file with the same data/settings fingerprint is there, else
    trained and saved there. `experts`: the folder whose experts' metrics.json say which training
    pairs they saw (the judges train on the others)."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    embed = embed or make_embedder(embedder)
    mbti_paths = [
        data_dir / "mbti/prefs" / MBTI_FILES[a] / s for a in AXES for s in ("train.jsonl", "test.jsonl")
    ]
    rp_paths = [
        data_dir / "roleplay/prefs" / f / s for f in ROLEPLAY_FILES for s in ("train.jsonl", "test.jsonl")
    ]
    for p in mbti_paths + rp_paths:
        if not p.is_file():
            raise FileNotFoundError(f"judge training data {p} is missing (see ../shared/data/README.md)")
    mbti = _cached(
        out_dir / f"mbti-{_fingerprint(mbti_paths, _settings('mbti', embedder, experts))}",
        MbtiJudge,
        embed,
        lambda: train_mbti_judge(data_dir, embed, embedder, progress, experts),
    )
    roleplay = _cached(
        out_dir / f"roleplay-{_fingerprint(rp_paths, _settings('roleplay', embedder, experts))}",
        RoleplayJudge,
        embed,
        lambda: train_roleplay_judge(data_dir, embed, embedder, progress, experts),
    )
    return mbti, roleplay
