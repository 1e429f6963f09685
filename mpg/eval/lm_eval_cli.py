"""`mpg-lm-eval` (or `python -m mpg.eval.lm_eval_cli`): lm-evaluation-harness's own CLI, with the "mpg"
model registered and mpg's tasks (mbti_16p) on the task path.

Why a wrapper: lm-eval 0.4.13 resolves `--model NAME` only against its own registry (its built-in
MODEL_MAPPING); it loads no third-party plugins. Ways to get "mpg":
- `mpg-lm-eval ...` / `python -m mpg.eval.lm_eval_cli ...` (any lm-eval version, any task);
- newer lm-eval releases discover installed models through the "lm_eval.models" entry-point group,
  which mpg declares (pyproject.toml): plain `lm_eval --model mpg ...`;
- with lm-eval 0.4.13, plain `lm_eval --model mpg --tasks <path to an mpg task yaml or folder>` also
  works: lm-eval imports a task named by path before it builds the model, and mpg's task utils register
  the model (see tasks/mbti_16p/utils.py).
Every argument is passed to lm-eval unchanged; when no --include_path is given, mpg's task folder is added.
Data parallel: `accelerate launch --multi_gpu --num_processes N -m mpg.eval.lm_eval_cli ...` (every
process runs this CLI; the model takes its rank from accelerate, see mpg.eval.lm_eval_plugin).
"""

from __future__ import annotations

import sys
from pathlib import Path

TASKS_DIR = Path(__file__).parent / "tasks"
PLUGIN = "mpg.eval.lm_eval_plugin:MPGLM"


def register() -> None:
    """Register "mpg" lazily (the plugin, and torch with it, is imported only when the model is used)."""
    from lm_eval.api.registry import model_registry

    if "mpg" not in model_registry:
        model_registry.register("mpg", target=PLUGIN)


def main(argv: list[str] | None = None) -> None:
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        sys.exit("mpg-lm-eval needs lm-evaluation-harness: pip install 'mpg[eval]'")
    register()
    args = list(sys.argv[1:] if argv is None else argv)
    if (
        args
        and not any(a == "--include_path" or a.startswith("--include_path=") for a in args)
        and args[0] not in ("-h", "--help")
    ):
        args += ["--include_path", str(TASKS_DIR)]
    sys.argv = ["lm_eval", *args]
    cli_evaluate()


if __name__ == "__main__":
    main()
