"""Data for the mbti_16p lm-eval task: the 16Personalities items, answered Agree / Disagree, scored
against one MBTI type.

The file is not shipped (it lives in ../shared/data/mbti/questionnaire_16p.json); give its path with
`--metadata data_path=PATH` (or the MPG_QUESTIONNAIRE environment variable). The type comes from
`persona=` in --model_args (the mpg model) or --metadata (any other model, e.g. `--model hf`): lm-eval
passes both to this loader. The gold answer of an item is Agree when its keyed letter is in the type,
else Disagree, so `acc` is the per-item accuracy of mpg.eval.questionnaire pooled over the four axes.
The prompt is mpg.eval.questionnaire.item_prompt, the same as the standalone questionnaire's.

Importing this file registers the "mpg" model with lm-eval. lm-eval 0.4.13 imports it before it builds
the model when the task is named by path (`--tasks .../mbti_16p.yaml` or the folder), so that plain
`lm_eval --model mpg --tasks <path>` works there too; `--tasks mbti_16p` needs `mpg-lm-eval`.
"""

from __future__ import annotations

import os

from mpg.eval.lm_eval_cli import register
from mpg.eval.questionnaire import axis_of, full_type, item_prompt, load_questionnaire

ENV = "MPG_QUESTIONNAIRE"
register()


def load_dataset(**kwargs):
    """custom_dataset hook: lm-eval calls it with the task metadata merged with --model_args/--metadata."""
    import datasets

    path = kwargs.get("data_path") or os.environ.get(ENV)
    if not path:
        raise ValueError(f"mbti_16p needs the questionnaire file: --metadata data_path=PATH (or ${ENV})")
    if not kwargs.get("persona"):
        raise ValueError(
            "mbti_16p scores answers against a type: pass persona=TYPE in --model_args or --metadata"
        )
    mbti_type = full_type(str(kwargs["persona"]))
    rows = []
    for item in load_questionnaire(path):
        letter = next(c for c in mbti_type if c in axis_of(item["dimension"]))
        rows.append(
            {
                "id": int(item["id"]),
                "statement": item["statement"],
                "dimension": item["dimension"],
                "keyed": item["keyed"],
                "persona": mbti_type,
                "prompt": item_prompt(item),
                "label": 0 if item["keyed"] == letter else 1,
            }
        )
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
