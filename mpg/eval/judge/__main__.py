"""`python -m mpg.eval.judge --data ../shared/data --out out/judges`: train (or load cached) persona
judges, print their held-out accuracy and write it to OUT/judges.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cache import load_or_train_judges
from .report import report_markdown


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m mpg.eval.judge",
        description="Train (or load cached) persona judges and print their held-out accuracy.",
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
