"""Which preference pairs a judge may train on, and role-play answers without leaked scaffolding.

The shipped experts were each trained on a seeded subset of their preference file
(`mpg.training.train_expert`'s max_train and seed, read back from each expert's metrics.json by
`trained_subset`); `unseen_train_rows` is the complement. `seen_texts` lists every text some expert
trained on, so that `independent_rows` can drop pairs whose chosen or rejected text also occurs verbatim
there (the data have a few duplicate texts) or in a test split.

Some role-play `rejected` answers carry leaked generation scaffolding ("User Message: ... Modified
Response: ...", "(Modified response):", quoted chosen/rejected pairs), which a judge would learn as "has
a label, is rejected". `clean_roleplay_answer` keeps only the answer itself; `clean_roleplay_pairs`
drops the pairs whose cleaned rejected answer equals or contains the chosen one.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from ...personas import SHIPPED_EXPERTS
from ...training import ROLEPLAY_FIELDS, load_preferences
from ..creativity import normalise

__all__ = [
    "MBTI_FILES",
    "ROLEPLAY_FILES",
    "clean_roleplay_answer",
    "clean_roleplay_pairs",
    "expert_subset",
    "independent_rows",
    "persona_text",
    "roleplay_fields",
    "seen_texts",
    "trained_subset",
    "unseen_train_rows",
]

MBTI_FILES = {"EI": "e_i", "SN": "s_n", "TF": "t_f", "JP": "j_p"}  # axis -> ../shared/data/mbti/prefs/<dir>
ROLEPLAY_FILES = ("personality", "profile")  # ../shared/data/roleplay/prefs/<dir>


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


def independent_rows(rows: list[dict], banned: set[str]) -> list[dict]:
    """The pairs neither of whose texts is in `banned`."""
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
