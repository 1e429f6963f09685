"""The judges' held-out accuracy as a Markdown table."""

from __future__ import annotations

from ...personas import AXES
from .data import ROLEPLAY_FILES

__all__ = ["report_markdown"]


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
