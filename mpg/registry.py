"""The weights an engine scores with, by name: models, their LoRA adapters, steering vectors, and the
caches derived from them (context heads' keys and values, the multi-LoRA kernel's stacked adapters).

Every change of weights goes through a method here, which drops the derived caches it invalidates:
loading an adapter, registering a model or a vector, adding a merged adapter for a proposal. Policies
name weights; `check_policy` says, once, whether a policy's names exist.
"""

from __future__ import annotations

import collections
import warnings
from pathlib import Path

import torch

from .expert_file import check_expert_info
from .policies import Policy
from .scoring import HeadCache

__all__ = ["Registry", "check_same_vocab", "is_peft"]


def is_peft(model) -> bool:
    """PEFT models choose the adapter per row (`adapter_names`); plain models take no such argument."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def check_same_vocab(base_tok, other_tok, what: str) -> None:
    a, b = base_tok.get_vocab(), other_tok.get_vocab()
    if a != b:
        diff = len(set(a.items()) ^ set(b.items()))
        raise ValueError(
            f"{what} uses a different tokenizer from the base ({len(b)} vs {len(a)} tokens, "
            f"{diff} entries differ); policies must share one tokenizer"
        )


def _quiet_peft():
    """PEFT 0.21 reads model.is_gradient_checkpointing, which transformers 5.24 deprecates: a FutureWarning
    on every adapter load about PEFT's own call, which no mpg user can act on."""
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
    return ctx


class Registry:
    def __init__(self, model, tokenizer, *, lora_kernel: str = "stacked", head_cache_size: int = 32):
        if lora_kernel not in ("stacked", "gathered", "peft"):
            raise ValueError(f"lora_kernel must be 'stacked', 'gathered' or 'peft', got {lora_kernel!r}")
        model.eval()
        self.tokenizer = tokenizer
        self.models = {"base": model}
        self.adapters: dict[str, set[str]] = {"base": set()}
        self.vectors: dict[str, torch.Tensor] = {}  # steering vectors by name: [n_layers, H]
        self.lora_kernel = lora_kernel  # how rows with different LoRA adapters share one forward
        self.head_cache_size = head_cache_size
        self.head_caches: dict[str, HeadCache] = {}  # model name -> its context heads
        self._lora: dict = {}  # model name -> (key, MultiLoRA | None)
        # (model, name) of the summed adapters, least recently used first
        self.merged: collections.OrderedDict = collections.OrderedDict()

    # ---- weights -----------------------------------------------------------------------------------
    def load_adapter(self, name: str, path: str | Path, model: str = "base") -> None:
        """Load a PEFT LoRA adapter folder onto `model` under `name` (fingerprints checked first)."""
        from peft import PeftModel

        path = Path(path)
        if not (path / "adapter_config.json").exists():
            raise FileNotFoundError(
                f"adapter {name!r}: {path} is not a PEFT adapter folder (no adapter_config.json)"
            )
        if (path / "tokenizer_config.json").exists() or (path / "tokenizer.json").exists():
            from transformers import AutoTokenizer

            check_same_vocab(
                self.tokenizer, AutoTokenizer.from_pretrained(path), f"adapter {name!r} ({path})"
            )
        if model not in self.models:
            raise ValueError(
                f"adapter {name!r}: unknown model {model!r}; registered: {', '.join(self.models)}"
            )
        base = self.models[model]
        check_expert_info(name, path, self.tokenizer, base)
        ctx = _quiet_peft()
        try:
            if isinstance(base, PeftModel):
                base.load_adapter(str(path), adapter_name=name)
            else:
                self.models[model] = PeftModel.from_pretrained(base, str(path), adapter_name=name)
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"adapter {name!r} ({path}) does not fit model {model!r}: {first}") from None
        finally:
            ctx.__exit__(None, None, None)
        self.models[model].eval()
        self.adapters[model].add(name)
        self.head_caches.pop(model, None)

    def add_lora_sum(self, name: str, coefficients: dict[str, float], model: str = "base") -> None:
        """Register adapter `name` on `model`: one LoRA whose delta is sum_a coefficients[a] * delta_a of
        loaded adapters (`mpg.lora_sum.add_merged_adapter`). A name already loaded is reused (names hash
        the coefficients: the same name is the same weights) and becomes the most recently used."""
        from .lora_sum import add_merged_adapter

        if name in self.adapters.get(model, set()):
            if (model, name) in self.merged:
                self.merged.move_to_end((model, name))
            return
        missing = [a for a in coefficients if a not in self.adapters.get(model, set())]
        if missing:
            raise ValueError(
                f"adapter(s) {', '.join(missing)} not loaded on model {model!r}; "
                f"loaded: {', '.join(sorted(self.adapters.get(model, set()))) or 'none'}"
            )
        ctx = _quiet_peft()
        try:
            add_merged_adapter(self.models[model], name, coefficients)
        finally:
            ctx.__exit__(None, None, None)
        self.adapters[model].add(name)
        self.merged[(model, name)] = None

    def trim_merged(self, limit: int, keep: set[str] = frozenset()) -> list[str]:
        """Unload the least recently used summed adapters until at most `limit` remain, never one named in
        `keep` (those running sequences use). Returns the names unloaded. The caller makes sure no forward
        is under way (the server's worker, between steps)."""
        out = []
        for model, name in list(self.merged):
            if len(self.merged) <= limit:
                break
            if name in keep:
                continue
            self.remove_adapter(name, model)
            out.append(name)
        return out

    def remove_adapter(self, name: str, model: str = "base") -> None:
        """Unload adapter `name` from `model`. Cached context heads stay: they are keyed by the adapter's
        name, and a name is loaded again only with the same weights."""
        if name not in self.adapters.get(model, set()):
            raise ValueError(f"no adapter {name!r} on model {model!r}")
        self.models[model].delete_adapter(name)
        self.adapters[model].discard(name)
        self.merged.pop((model, name), None)

    def add_model(self, name: str, model, tokenizer=None) -> None:
        """Register a separate causal LM; it must share the base tokenizer and output vocabulary."""
        if name in self.models:
            raise ValueError(f"a model named {name!r} is already registered")
        if tokenizer is not None:
            check_same_vocab(self.tokenizer, tokenizer, f"model {name!r}")
        v_base = self.models["base"].get_output_embeddings().weight.shape[0]
        v_new = model.get_output_embeddings().weight.shape[0]
        if v_new != v_base:
            raise ValueError(
                f"model {name!r} has an output vocabulary of {v_new} tokens but the base has {v_base}; "
                "policies must score the same token set"
            )
        model.eval()
        self.models[name] = model
        self.adapters[name] = set()

    def add_steering_vector(self, name: str, vector: torch.Tensor) -> None:
        """Register a steering vector: [n_layers, H] (one per decoder block) or [H] (the same at every block)."""
        vector = torch.as_tensor(vector, dtype=torch.float32).detach()
        n_layers = self.models["base"].config.num_hidden_layers
        if vector.dim() == 1:
            vector = vector.unsqueeze(0).expand(n_layers, -1)
        if vector.dim() != 2 or not torch.isfinite(vector).all():
            raise ValueError(f"steering vector {name!r} must be a finite [H] or [n_layers, H] tensor")
        self.vectors[name] = vector
        self.head_caches.clear()  # cached heads of steered policies may have used the old vector

    # ---- names -------------------------------------------------------------------------------------
    def check_policy(self, policy: Policy) -> None:
        """A clear error if the policy names a model, adapter or steering vector that is not registered."""
        if policy.model not in self.models:
            raise ValueError(
                f"policy refers to unknown model {policy.model!r}; registered: {', '.join(self.models)}"
            )
        loaded = self.adapters.get(policy.model, set())
        if policy.adapter is not None and policy.adapter not in loaded:
            have = ", ".join(sorted(loaded)) or "none"
            raise ValueError(
                f"unknown adapter {policy.adapter!r} on model {policy.model!r}; loaded adapters: {have}"
            )
        for st in policy.steering or ():
            if st.vector not in self.vectors:
                have = ", ".join(sorted(self.vectors)) or "none"
                raise ValueError(f"unknown steering vector {st.vector!r}; registered: {have}")

    # ---- derived caches ------------------------------------------------------------------------------
    def head_cache(self, model: str) -> HeadCache | None:
        """The context-head cache of `model` (None when head caching is off)."""
        if self.head_cache_size <= 0:
            return None
        if model not in self.head_caches:
            self.head_caches[model] = HeadCache(self.head_cache_size)
        return self.head_caches[model]

    def multi_lora(self, model: str):
        """The multi-LoRA kernel for this model's adapters (None: PEFT's own mixed batch)."""
        from .kernels.lora import MultiLoRA

        m = self.models[model]
        if self.lora_kernel == "peft" or not is_peft(m) or not self.adapters[model]:
            return None
        key = (model, tuple(sorted(self.adapters[model])), self.lora_kernel)
        if self._lora.get(model, (None,))[0] != key:
            self._lora[model] = (key, MultiLoRA(m, self.lora_kernel) if MultiLoRA.supports(m) else None)
        return self._lora[model][1]
