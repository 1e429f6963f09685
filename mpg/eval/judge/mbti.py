"""The MBTI judge: one binary classifier per axis (E/I, S/N, T/F, J/P) of an answer's embedding.

Each unseen preference pair gives two examples: `chosen` is written in the prompt's `side` letter's
style, `rejected` in the opposite letter's. Held-out accuracy is measured on the axis's test.jsonl (the
experts only reported metrics on it; nothing trained on it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ...personas import AXES, SHIPPED_EXPERTS
from ...stats import accuracy_ci
from ...training import load_preferences
from ..creativity import Embedder
from .data import MBTI_FILES, independent_rows, seen_texts, unseen_train_rows
from .files import load_judge_files, make_embedder, save_judge_files
from .logistic import Logistic, choose_l2, fit_logistic

__all__ = ["MbtiJudge", "axis_examples", "train_axis", "train_mbti_judge"]


class MbtiJudge:
    """Four axis classifiers on an answer's embedding; column k is p(first letter of AXES[k])."""

    def __init__(self, axes: dict[str, Logistic], embed: Embedder, embedder: str, report: dict | None = None):
        if set(axes) != set(AXES):
            raise ValueError(
                f"an MBTI judge needs one classifier per axis {', '.join(AXES)}, got {', '.join(axes)}"
            )
        self.axes, self.embed, self.embedder, self.report = axes, embed, embedder, report or {}

    def predict_proba(self, texts: list[str]) -> torch.Tensor:
        """[N, 4]: p(E), p(S), p(T), p(J) of each text."""
        x = self.embed(list(texts))  # [N, D]
        return torch.stack([self.axes[a].proba(x) for a in AXES], dim=1) if len(texts) else torch.zeros(0, 4)

    def letters(self, texts: list[str]) -> list[str]:
        """The judged type of each text, e.g. 'ENTJ'."""
        p = self.predict_proba(texts)  # [N, 4]
        return [
            "".join(a[0] if p[i, k] > 0.5 else a[1] for k, a in enumerate(AXES)) for i in range(p.shape[0])
        ]

    def save(self, path_stem: str | Path) -> None:
        tensors = {k: v for a in AXES for k, v in self.axes[a].tensors(a).items()}
        save_judge_files(
            Path(path_stem),
            tensors,
            {
                "kind": "mbti",
                "embedder": self.embedder,
                "l2": {a: self.axes[a].l2 for a in AXES},
                "report": self.report,
            },
        )

    @classmethod
    def load(cls, path_stem: str | Path, embed: Embedder | None = None) -> MbtiJudge:
        t, meta = load_judge_files(Path(path_stem))
        if meta.get("kind") != "mbti":
            raise ValueError(f"{path_stem} is not an MBTI judge (kind {meta.get('kind')!r})")
        return cls(
            {a: Logistic.from_tensors(t, a, meta["l2"][a]) for a in AXES},
            embed or make_embedder(meta["embedder"]),
            meta["embedder"],
            meta.get("report"),
        )


def axis_examples(rows: list[dict], axis: str) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(texts, y [2N] = 1 for the axis's first letter, pair index [2N]): chosen is in `side`'s style,
    rejected in the opposite side's."""
    texts, labels, groups = [], [], []
    for i, r in enumerate(rows):
        side = r.get("side")
        if side not in axis:
            raise ValueError(f"MBTI pair {i} has side {side!r}, not a letter of the {axis[0]}/{axis[1]} axis")
        first = side == axis[0]
        texts += [r["chosen"], r["rejected"]]
        labels += [float(first), float(not first)]
        groups += [i, i]
    return texts, torch.tensor(labels), torch.tensor(groups)


def train_axis(
    train_rows: list[dict], test_rows: list[dict], axis: str, embed: Embedder
) -> tuple[Logistic, dict]:
    """One axis classifier and its held-out figures (per-text accuracy, and per-pair: chosen judged
    more `side`-like than rejected)."""
    texts, y, groups = axis_examples(train_rows, axis)
    x = embed(texts)  # [2N, D]
    l2, cv = choose_l2(x, y, groups)
    model = fit_logistic(x, y, l2)
    test_texts, ty, _ = axis_examples(test_rows, axis)
    p = model.proba(embed(test_texts))  # [2M]
    right = int(((p > 0.5).float() == ty).sum())
    first = ty.view(-1, 2)[:, 0].bool()  # [M] the pair's side is the first letter
    q = p.view(-1, 2)  # [M, 2] p(first letter) of chosen, rejected
    pairs_right = int(torch.where(first, q[:, 0] > q[:, 1], q[:, 0] < q[:, 1]).sum())
    train_right = int(((model.proba(x) > 0.5).float() == y).sum())
    return model, {
        "train_pairs": len(train_rows),
        "test_pairs": len(test_rows),
        "l2": l2,
        "cv_accuracy": {str(k): v for k, v in cv.items()},
        "train_accuracy": train_right / len(y),
        "held_out": accuracy_ci(right, len(ty)),
        "held_out_pairs": accuracy_ci(pairs_right, len(test_rows)),
    }


def train_mbti_judge(
    data_dir: str | Path,
    embed: Embedder,
    embedder: str,
    progress: bool = True,
    experts: str | Path = SHIPPED_EXPERTS,
) -> MbtiJudge:
    """Train the four axis classifiers on the unseen train rows; held-out figures in `.report`."""
    prefs = Path(data_dir) / "mbti" / "prefs"
    train_paths = [prefs / MBTI_FILES[a] / "train.jsonl" for a in AXES]
    banned = seen_texts(train_paths, experts)
    axes, report = {}, {}
    for a in AXES:
        test_rows = load_preferences(prefs / MBTI_FILES[a] / "test.jsonl")
        test_texts = {t for r in test_rows for t in (r["chosen"], r["rejected"])}
        unseen = unseen_train_rows(prefs / MBTI_FILES[a] / "train.jsonl", experts=experts)
        rows = independent_rows(unseen, banned | test_texts)
        axes[a], report[a] = train_axis(rows, test_rows, a, embed)
        report[a]["unseen_pairs"], report[a]["dropped_duplicates"] = len(unseen), len(unseen) - len(rows)
        if progress:
            h = report[a]["held_out"]
            print(
                f"judge {a[0]}/{a[1]}: {len(rows)} pairs, held-out accuracy {h['accuracy']:.3f} "
                f"[{h['ci95'][0]:.3f}, {h['ci95'][1]:.3f}] on {h['n']} texts",
                file=sys.stderr,
            )
    return MbtiJudge(axes, embed, embedder, report)
