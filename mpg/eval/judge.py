"""Persona judges trained only on data the experts never saw.

A composed sampler is judged by how well a *separate* classifier recognises the persona in its
answers. That classifier must not share training data with the experts, or it would reward answers
for resembling the experts' own training text rather than for the persona. The shipped experts
were each trained on a seeded subset of their preference file (`mpg.training.train_expert`'s
max_train and seed, read back from each shipped expert's metrics.json by `trained_subset`);
`unseen_train_rows` is the complement, and the judges train on it only:

- `MbtiJudge`: one binary classifier per axis (E/I, S/N, T/F, J/P) of an answer text. Each unseen
  pair gives two examples: `chosen` is written in the prompt's `side` letter's style, `rejected`
  in the opposite letter's. Held-out accuracy is measured on the axis's test.jsonl (the experts
  only reported metrics on it; nothing trained on it).
- `RoleplayJudge`: one classifier of "in persona" (chosen) vs "not" (rejected) given the role-play
  profile and personality, trained on the unseen pairs of both role-play files. Features for
  answer a and context c = profile + " " + personality (both embedded, L2-normalised):
  [a, a * c, a . c]: the answer's own style, its element-wise agreement with the persona, and their
  cosine, so a linear model can reward answers about the profile's topics in its voice.
  ~40% of the role-play `rejected` answers carry leaked generation scaffolding ("User Message: ...
  Modified Response: ...", "(Modified response):", quoted chosen/rejected pairs). A judge would learn
  "has a label, is rejected". `clean_roleplay_answer` keeps only the answer itself, on both sides
  and on every answer the judge scores later; pairs whose cleaned rejected answer equals or contains
  the chosen one (the leak kept no separate answer) are dropped.

Pairs whose chosen or rejected text also occurs verbatim in any expert's training subset (the data
have a few duplicate texts) or in the test split are dropped from judge training as well.

Features are sentence embeddings (MiniLM, 384-d; `hash_embedder` in tests); the model is an
L2-regularised logistic regression in plain torch (float64, full-batch L-BFGS, deterministic) on
standardised features, its L2 strength chosen by 5-fold cross-validation over pairs on the training
rows only. Judges are saved as safetensors + json under out/judges/, keyed by a fingerprint of the
data files, embedder and settings, and reused when the fingerprint matches.

    python -m mpg.eval.judge --data ../shared/data          # train (or load) both, print held-out figures
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..personas import AXES, SHIPPED_EXPERTS
from ..stats import accuracy_ci
from ..training import ROLEPLAY_FIELDS, load_preferences
from .creativity import Embedder, hash_embedder, minilm_embedder, normalise

__all__ = [
    "MBTI_FILES",
    "ROLEPLAY_FILES",
    "Logistic",
    "MbtiJudge",
    "RoleplayJudge",
    "axis_examples",
    "choose_l2",
    "clean_roleplay_answer",
    "clean_roleplay_pairs",
    "expert_subset",
    "fit_logistic",
    "load_or_train_judges",
    "make_embedder",
    "persona_text",
    "report_markdown",
    "roleplay_features",
    "roleplay_fields",
    "seen_texts",
    "train_axis",
    "train_mbti_judge",
    "train_roleplay_judge",
    "trained_subset",
    "unseen_train_rows",
]

JUDGE_VERSION = 2  # 2: each file's subset from its expert's metrics.json (was 160 pairs, seed 0 for all)
MBTI_FILES = {"EI": "e_i", "SN": "s_n", "TF": "t_f", "JP": "j_p"}  # axis -> ../shared/data/mbti/prefs/<dir>
ROLEPLAY_FILES = ("personality", "profile")  # ../shared/data/roleplay/prefs/<dir>
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
FOLDS = 5


# ---- which rows the experts never saw ----------------------------------------------------------
def expert_subset(n_rows: int, max_train: int | None, seed: int) -> list[int]:
    """Indices of the rows an expert trained on: `mpg.training.train_expert`'s seeded subset."""
    if max_train and max_train < n_rows:
        return sorted(random.Random(seed).sample(range(n_rows), max_train))
    return list(range(n_rows))


def trained_subset(train_file: str | Path, experts: str | Path = SHIPPED_EXPERTS) -> tuple[int | None, int]:
    """(max_train, seed) of the shipped expert trained on `train_file` (.../mbti/prefs/s_n/train.jsonl ->
    mbti_s_n, .../roleplay/prefs/profile/train.jsonl -> roleplay_profile), from its metrics.json."""
    path = Path(train_file)
    name = f"{path.parent.parent.parent.name}_{path.parent.name}"  # mbti_s_n, roleplay_profile
    metrics = Path(experts) / name / "metrics.json"
    if not metrics.is_file():
        raise FileNotFoundError(f"expert {metrics.parent} has no metrics.json: which pairs it saw is unknown")
    settings = json.loads(metrics.read_text())["settings"]
    return settings["max_train"], settings["seed"]


def unseen_train_rows(
    path: str | Path,
    max_train: int | None = None,
    seed: int | None = None,
    experts: str | Path = SHIPPED_EXPERTS,
) -> list[dict]:
    """The rows of a train.jsonl that its expert (max_train, seed; default: the settings in the
    metrics.json of its expert in `experts`) did not see, in file order."""
    if max_train is None and seed is None:
        max_train, seed = trained_subset(path, experts)
    rows = load_preferences(path)
    seen = set(expert_subset(len(rows), max_train, seed or 0))
    return [r for i, r in enumerate(rows) if i not in seen]


def seen_texts(paths: list[Path], experts: str | Path = SHIPPED_EXPERTS) -> set[str]:
    """Every chosen/rejected text some expert trained on (for the verbatim-duplicate filter)."""
    out: set[str] = set()
    for path in paths:
        rows = load_preferences(path)
        for i in expert_subset(len(rows), *trained_subset(path, experts)):
            out |= {rows[i]["chosen"], rows[i]["rejected"]}
    return out


def _independent(rows: list[dict], banned: set[str]) -> list[dict]:
    return [r for r in rows if r["chosen"] not in banned and r["rejected"] not in banned]


# ---- role-play text cleaning ---------------------------------------------------------------------
_LABEL = re.compile(
    r"^[ \t]*[(*]*[ \t]*(modified[ \t]+user[ \t]+message|modified[ \t]+response|modified[ \t]+version|"
    r"user[ \t]+message|response|assistant|personalities|profile)[ \t]*[)*]*[ \t]*:[ \t]*[)*]*",
    re.I | re.M,
)
_PARAGRAPH = re.compile(r"\n\s*\n")
_QUOTES = '"“”'


def clean_roleplay_answer(text: str) -> str:
    """The answer without leaked scaffolding: of labelled sections ("User Message:", "Response:",
    "(Modified response):", ...) the last one that is not a Profile/Personalities restatement;
    parenthesised meta paragraphs dropped; of several quoted paragraphs the last; outer quotes removed.
    Plain answers come back unchanged (stripped)."""
    parts = _LABEL.split(text)
    if len(parts) > 1:  # [before, label1, text1, label2, text2, ...]
        sections = [("", parts[0])] + [(parts[i].lower(), parts[i + 1]) for i in range(1, len(parts), 2)]
        kept = [s for label, s in sections if s.strip() and label not in ("profile", "personalities")]
        text = kept[-1] if kept else ""
    paragraphs = [p.strip() for p in _PARAGRAPH.split(text) if p.strip()]
    paragraphs = [p for p in paragraphs if not (p.startswith("(") and p.endswith(")"))]
    if len(paragraphs) > 1 and all(p[0] in _QUOTES for p in paragraphs):
        paragraphs = paragraphs[-1:]
    text = "\n\n".join(paragraphs)
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES and text.count('"') <= 2:
        text = text[1:-1].strip()
    return text


def roleplay_fields(prompt: str) -> tuple[str, str]:
    """(profile, personality) of a role-play prompt; one-line error if it is not one."""
    m = ROLEPLAY_FIELDS.search(prompt)
    if not m:
        raise ValueError(
            f"not a role-play prompt (no 'Profile: ...' / 'Personalities: ...' lines): {prompt[:60]!r}"
        )
    return m["profile"].strip(), m["personality"].strip()


def clean_roleplay_pairs(rows: list[dict]) -> list[dict]:
    """{profile, personality, chosen, rejected} with cleaned answers; pairs left with no distinct
    rejected answer (it equals or contains the chosen one after cleaning) are dropped."""
    out = []
    for r in rows:
        profile, personality = roleplay_fields(r["prompt"])
        chosen, rejected = clean_roleplay_answer(r["chosen"]), clean_roleplay_answer(r["rejected"])
        if chosen and rejected and normalise(chosen) not in normalise(rejected):
            out.append(
                {"profile": profile, "personality": personality, "chosen": chosen, "rejected": rejected}
            )
    return out


def persona_text(profile: str, personality: str) -> str:
    return f"{profile.strip()} {personality.strip()}"


# ---- logistic regression -------------------------------------------------------------------------
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


# ---- embedders by name (so a saved judge knows how to embed) ------------------------------------
def make_embedder(name: str) -> Embedder:
    """'minilm' or 'hash<dim>' (e.g. 'hash512')."""
    if name == "minilm":
        return minilm_embedder()
    if m := re.fullmatch(r"hash(\d+)", name):
        return hash_embedder(int(m[1]))
    raise ValueError(f"unknown embedder {name!r}; use 'minilm' or 'hash<dim>'")


def _fingerprint(paths: list[Path], settings: dict) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _save(path_stem: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    from safetensors.torch import save_file

    path_stem.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path_stem.with_suffix(".safetensors")))
    path_stem.with_suffix(".json").write_text(json.dumps(meta, indent=2))


def _load(path_stem: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load_file

    for suffix in (".safetensors", ".json"):
        if not path_stem.with_suffix(suffix).is_file():
            raise FileNotFoundError(f"judge file {path_stem.with_suffix(suffix)} does not exist")
    return load_file(str(path_stem.with_suffix(".safetensors"))), json.loads(
        path_stem.with_suffix(".json").read_text()
    )


# ---- MBTI judge -----------------------------------------------------------------------------------
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
        _save(
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
        t, meta = _load(Path(path_stem))
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
        rows = _independent(unseen, banned | test_texts)
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


# ---- role-play judge ------------------------------------------------------------------------------
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
        _save(
            Path(path_stem),
            self.model.tensors("roleplay"),
            {"kind": "roleplay", "embedder": self.embedder, "l2": self.model.l2, "report": self.report},
        )

    @classmethod
    def load(cls, path_stem: str | Path, embed: Embedder | None = None) -> RoleplayJudge:
        t, meta = _load(Path(path_stem))
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
        pairs = clean_roleplay_pairs(_independent(unseen, banned))
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


# ---- cache ----------------------------------------------------------------------------------------
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


def report_markdown(mbti: dict, roleplay: dict) -> str:
    """Held-out accuracy table of both judges, from their `.report`s."""

    def ci(h):
        return f"{h['accuracy']:.3f} [{h['ci95'][0]:.3f}, {h['ci95'][1]:.3f}] (n={h['n']})"

    lines = [
        "| judge | train pairs (unseen) | held-out accuracy, per text | held-out, per pair |",
        "|---|---|---|---|",
    ]
    for a in AXES:
        r = mbti[a]
        lines.append(
            f"| MBTI {a[0]}/{a[1]} | {r['train_pairs']} | {ci(r['held_out'])} | {ci(r['held_out_pairs'])} |"
        )
    r = roleplay
    for f in ROLEPLAY_FILES:
        rf = r["files"][f]
        lines.append(
            f"| role-play, {f} test | {rf['train_pairs']} | {ci(rf['held_out'])} | {ci(rf['held_out_pairs'])} |"
        )
    lines.append(
        f"| role-play, pooled | {r['train_pairs']} | {ci(r['held_out'])} | {ci(r['held_out_pairs'])} |"
    )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Train (or load cached) persona judges and print their held-out accuracy."
    )
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="out/judges")
    ap.add_argument("--embedder", default="minilm", help="'minilm' or 'hash<dim>'")
    args = ap.parse_args(argv)
    mbti, roleplay = load_or_train_judges(args.data, args.out, args.embedder)
    table = report_markdown(mbti.report, roleplay.report)
    (Path(args.out) / "judges.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
