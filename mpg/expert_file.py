"""`mpg_expert.json`, the file an mpg expert adapter folder carries next to its PEFT files.

    {"base": name of the base model, "contexts": {side or "roleplay": prompt template},
     "vocab_fingerprint": ..., "weight_fingerprint": [...],
     "ratio_spread": {side: spread}, "ratio_spread_source": ...}

This module is the only one that reads or writes it. Training writes it (`write_expert_info`); personas
read the contexts the expert was trained under (`expert_contexts`) and the composition's weight rule
its ratio spreads (`expert_spreads`, written by `mpg calibrate-expert` through `write_spreads`); the
engine checks, before loading an adapter, that the folder fits the loaded base and tokenizer
(`check_expert_info`). Plain PEFT folders have no such file: no contexts, nothing checked.
"""

from __future__ import annotations

import json
from pathlib import Path

from .fingerprint import same_weights, vocab_fingerprint, weight_fingerprint

__all__ = [
    "EXPERT_FILE",
    "check_expert_info",
    "expert_contexts",
    "expert_spreads",
    "write_expert_info",
    "write_spreads",
]

EXPERT_FILE = "mpg_expert.json"


def write_expert_info(out_dir: str | Path, model, tok, contexts: dict[str, str], base_name: str) -> None:
    """Write `out_dir`/mpg_expert.json: the contexts the expert was trained under and fingerprints of its
    base (`model`, a PEFT model or the bare base) and tokenizer `tok`."""
    info = {
        "base": base_name,
        "contexts": contexts,
        "vocab_fingerprint": vocab_fingerprint(tok),
        "weight_fingerprint": weight_fingerprint(model),
    }
    (Path(out_dir) / EXPERT_FILE).write_text(json.dumps(info, indent=2))


def expert_contexts(path: str | Path) -> dict[str, str]:
    """The contexts an mpg expert folder was trained under ({} for plain PEFT folders)."""
    path = Path(path)
    if not (path / "adapter_config.json").exists():
        raise FileNotFoundError(f"expert adapter folder {path} is missing (no adapter_config.json there)")
    info = path / EXPERT_FILE
    return json.loads(info.read_text()).get("contexts", {}) if info.exists() else {}


def check_expert_info(name: str, path: Path, tokenizer, model) -> None:
    """Raise ValueError if adapter folder `path` (loaded as `name`) carries fingerprints of another
    tokenizer or base than `tokenizer` / `model`; a folder without mpg_expert.json passes."""
    info_path = Path(path) / EXPERT_FILE
    if not info_path.exists():
        return
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"adapter {name!r}: {info_path} is unreadable ({e})") from None
    trained_on = info.get("base", "another model")
    if "vocab_fingerprint" in info and info["vocab_fingerprint"] != vocab_fingerprint(tokenizer):
        raise ValueError(
            f"adapter {name!r} ({path}) was trained with another tokenizer ({trained_on}); "
            "it does not match this base model's tokenizer"
        )
    if "weight_fingerprint" in info and not same_weights(
        info["weight_fingerprint"], weight_fingerprint(model)
    ):
        raise ValueError(
            f"adapter {name!r} ({path}) was trained on another base model ({trained_on}); "
            "its weight fingerprint does not match the loaded base"
        )


def expert_spreads(folder: str | Path) -> dict[str, float]:
    """{side: ratio spread} stored in an expert folder's mpg_expert.json ({} when never measured)."""
    info = Path(folder) / EXPERT_FILE
    return json.loads(info.read_text()).get("ratio_spread", {}) if info.is_file() else {}


def write_spreads(folder: str | Path, spreads: dict[str, float], source: str) -> None:
    """Store {side: spread} (and where it was measured) in the expert folder's mpg_expert.json."""
    info_path = Path(folder) / EXPERT_FILE
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info["ratio_spread"] = {k: round(v, 5) for k, v in spreads.items()}
    info["ratio_spread_source"] = source
    info_path.write_text(json.dumps(info, indent=2))
