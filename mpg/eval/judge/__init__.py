"""Persona judges trained only on data the experts never saw.

A composed sampler is judged by how well a *separate* classifier recognises the persona in its
answers. That classifier must not share training data with the experts, or it would reward answers
for resembling the experts' own training text rather than for the persona. So the judges train only on
the preference pairs no shipped expert trained on, cleaned and without texts that also occur in an
expert's subset or a test split:

- `data`: which rows each expert saw (from its metrics.json), the unseen rest, the duplicate filter,
  role-play answers without leaked scaffolding;
- `logistic`: the classifier, an L2-regularised logistic regression (plain torch, float64, full-batch
  L-BFGS, deterministic) on standardised features, its L2 strength chosen by 5-fold cross-validation
  over pairs on the training rows only;
- `mbti`: `MbtiJudge`, one classifier per axis of an answer's sentence embedding;
- `roleplay`: `RoleplayJudge`, "in persona" given the profile and personality;
- `files`: a judge on disk (safetensors + json) and the embedders by name (MiniLM, 384-d;
  `hash<dim>` in tests);
- `cache`: `load_or_train_judges`, both judges saved under out/judges/ keyed by a fingerprint of the
  data files, embedder and settings, reused when it matches;
- `report`: the held-out accuracy table.

    python -m mpg.eval.judge --data ../shared/data          # train (or load) both, print held-out figures
"""

from .cache import JUDGE_VERSION, load_or_train_judges
from .data import (
    MBTI_FILES,
    ROLEPLAY_FILES,
    clean_roleplay_answer,
    clean_roleplay_pairs,
    expert_subset,
    independent_rows,
    persona_text,
    roleplay_fields,
    seen_texts,
    trained_subset,
    unseen_train_rows,
)
from .files import make_embedder
from .logistic import FOLDS, L2_GRID, Logistic, choose_l2, fit_logistic
from .mbti import MbtiJudge, axis_examples, train_axis, train_mbti_judge
from .report import report_markdown
from .roleplay import RoleplayJudge, roleplay_features, train_roleplay_judge

__all__ = [
    "FOLDS",
    "JUDGE_VERSION",
    "L2_GRID",
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
    "independent_rows",
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
