"""The role-play judge: p(answer is the in-persona one | profile, personality).

One classifier of "in persona" (chosen) vs "not" (rejected), trained on the unseen, cleaned pairs of both
role-play files. Features for answer a and context c = profile + " " + personality (both embedded,
L2-normalised): [a, a * c, a . c]: the answer's own style, its element-wise agreement with the persona,
and their cosine, so a linear model can reward answers about the profile's topics in its voice. Every
answer is cleaned (`data.clean_roleplay_answer`) before it is embedded, in training and when scoring.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ...personas import SHIPPED_EXPERTS
from ...stats import accuracy_ci
from ...training import load_preferences
from ..creativity import Embedder
from .data import (
    ROLEPLAY_FILES,
    clean_roleplay_answer,
    clean_roleplay_pairs,
    independent_rows,
    persona_text,
    seen_texts,
    unseen_train_rows,
)
from .files import load_judge_files, make_embedder, save_judge_files
from .logistic import Logistic, choose_l2, fit_logistic

__all__ = ["RoleplayJudge", "roleplay_features", "train_roleplay_judge"]


def roleplay_features(embed: Embedder, answers: list[str], contexts: list[str]) -> torch.Tensor:
    """[N, 2D + 1]: [a, a * c, a . c] of the embedded (cleaned) answer a and persona text c."""
    a = embed([clean_roleplay_answer(t) for t in answers])  # [N, D]
    unique = list(dict.fromkeys(contexts))  # a persona is embedded once
    where = {t: i for i, t in enumerate(unique)}
    c = embed(unique)[torch.tensor([where[t] for t in contexts], dtype=torch.long)]  # [N, D]
    return torch.cat([a, a * c, (a * c).sum(-1, keepdim=True)], dim=-1)


class RoleplayJudge:
    """p(answer is the in-persona one | profile, personality)."""

    def __init__(self, model: Logistic, embed: Embedder, embedder: str, report: dict | None = None):
        self.model, self.embed, self.embedder, self.report = model, embed, embedder, report or {}

    def score(self, answers: list[str], profiles: list[str], personalities: list[str]) -> torch.Tensor:
        """[N] in [0, 1]."""
        if not len(answers) == len(profiles) == len(personalities):
            raise ValueError(
                f"{len(answers)} answers, {len(profiles)} profiles, {len(personalities)} personalities"
            )
        if not answers:
            return torch.zeros(0)
        ctx = [persona_text(p, q) for p, q in zip(profiles, personalities)]
        return self.model.proba(roleplay_features(self.embed, answers, ctx))

    def save(self, path_stem: str | Path) -> None:
        save_judge_files(
            Path(path_stem),
            self.model.tensors("roleplay"),
            {"kind": "roleplay", "embedder": self.embedder, "l2": self.model.l2, "report": self.report},
        )

    @classmethod
    def load(cls, path_stem: str | Path, embed: Embedder | None = None) -> RoleplayJudge:
        t, meta = load_judge_files(Path(path_stem))
        if meta.get("kind") != "roleplay":
            raise ValueError(f"{path_stem} is not a role-play judge (kind {meta.get('kind')!r})")
        return cls(
            Logistic.from_tensors(t, "roleplay", meta["l2"]),
            embed or make_embedder(meta["embedder"]),
            meta["embedder"],
            meta.get("report"),
        )


def _pair_examples(pairs: list[dict]) -> tuple[list[str], list[str], torch.Tensor, torch.Tensor]:
    answers, contexts, labels, groups = [], [], [], []
    for i, p in enumerate(pairs):
        ctx = persona_text(p["profile"], p["personality"])
        answers += [p["chosen"], p["rejected"]]
        contexts += [ctx, ctx]
        labels += [1.0, 0.0]
        groups += [i, i]
    return answers, contexts, torch.tensor(labels), torch.tensor(groups)


def _pair_figures(judge: RoleplayJudge, pairs: list[dict]) -> dict:
    answers, contexts, y, _ = _pair_examples(pairs)
    p = judge.model.proba(roleplay_features(judge.embed, answers, contexts))  # [2M]
    pair = p.view(-1, 2)  # [M, 2] chosen, rejected
    return {
        "held_out": accuracy_ci(int(((p > 0.5).float() == y).sum()), len(y)),
        "held_out_pairs": accuracy_ci(int((pair[:, 0] > pair[:, 1]).sum()), len(pairs)),
    }


def train_roleplay_judge(
    data_dir: str | Path,
    embed: Embedder,
    embedder: str,
    progress: bool = True,
    experts: str | Path = SHIPPED_EXPERTS,
) -> RoleplayJudge:
    """Train on the unseen, cleaned pairs of both role-play files; held-out figures per file and pooled."""
    prefs = Path(data_dir) / "roleplay" / "prefs"
    train_paths = [prefs / f / "train.jsonl" for f in ROLEPLAY_FILES]
    banned = seen_texts(train_paths, experts)
    test = {f: load_preferences(prefs / f / "test.jsonl") for f in ROLEPLAY_FILES}
    banned |= {t for rows in test.values() for r in rows for t in (r["chosen"], r["rejected"])}
    train_pairs, report = [], {"files": {}}
    for f in ROLEPLAY_FILES:
        unseen = unseen_train_rows(prefs / f / "train.jsonl", experts=experts)
        pairs = clean_roleplay_pairs(independent_rows(unseen, banned))
        train_pairs += pairs
        report["files"][f] = {"unseen_pairs": len(unseen), "train_pairs": len(pairs)}
    answers, contexts, y, groups = _pair_examples(train_pairs)
    x = roleplay_features(embed, answers, contexts)  # [2N, 2D + 1]
    l2, cv = choose_l2(x, y, groups)
    judge = RoleplayJudge(fit_logistic(x, y, l2), embed, embedder)
    test_pairs = {f: clean_roleplay_pairs(rows) for f, rows in test.items()}
    for f in ROLEPLAY_FILES:
        report["files"][f].update(
            test_pairs=len(test_pairs[f]), test_rows=len(test[f]), **_pair_figures(judge, test_pairs[f])
        )
    report.update(
        train_pairs=len(train_pairs),
        l2=l2,
        cv_accuracy={str(k): v for k, v in cv.items()},
        train_accuracy=float(((judge.model.proba(x) > 0.5).float() == y).float().mean()),
        **_pair_figures(judge, [p for f in ROLEPLAY_FILES for p in test_pairs[f]]),
    )
    judge.report = report
    if progress:
        h = report["held_out"]
        print(
            f"judge role-play: {len(train_pairs)} pairs, held-out accuracy {h['accuracy']:.3f} "
            f"[{h['ci95'][0]:.3f}, {h['ci95'][1]:.3f}] on {h['n']} texts",
            file=sys.stderr,
        )
    return judge
