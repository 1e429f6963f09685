"""The engine: models and adapters by name, policy contexts, and `generate()` in the transformers idiom."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .policies import Attribute, Policy, Target
from .samplers import SAMPLERS, SamplerConfig, SequenceStats
from .samplers.common import Batch, Sequence, TargetRows
from .scoring import MultiPolicyScorer, PolicyGroup
from .steering import row_deltas


@dataclass
class GenerateOutput:
    texts: list[str]
    token_ids: list[list[int]]
    stats: list[SequenceStats]
    policies: list[str] = field(default_factory=list)  # labels of the unique policies scored


class Engine:
    """Holds one base model (with LoRA adapters) plus optional separate models sharing its tokenizer."""

    def __init__(self, model, tokenizer, *, use_chat_template: bool | None = None, lora_kernel: str = "stacked"):
        model.eval()
        if lora_kernel not in ("stacked", "gathered", "peft"):
            raise ValueError(f"lora_kernel must be 'stacked', 'gathered' or 'peft', got {lora_kernel!r}")
        self.lora_kernel = lora_kernel      # how rows with different LoRA adapters share one forward
        self._lora_cache: dict = {}
        self.tokenizer = tokenizer
        self.models = {"base": model}
        self.adapters: dict[str, set[str]] = {"base": set()}
        self.vectors: dict[str, torch.Tensor] = {}  # steering vectors by name: [n_layers, H]
        self.use_chat_template = (getattr(tokenizer, "chat_template", None) is not None
                                  if use_chat_template is None else use_chat_template)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, *, adapters: dict[str, str] | None = None,
                        device: str = "cpu", dtype: torch.dtype = torch.float32, **kwargs) -> "Engine":
        """Load a local Hugging Face model folder (None: the embedded SmolLM2 default) and adapters."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .default_model import default_base_path
        path = Path(path) if path is not None else default_base_path()
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"base model folder {path} has no config.json (not a Hugging Face model folder)")
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
        engine = cls(model, tok, **kwargs)
        for name, adapter_path in (adapters or {}).items():
            engine.load_adapter(name, adapter_path)
        return engine

    def load_adapter(self, name: str, path: str | Path, model: str = "base") -> None:
        """Load a PEFT LoRA adapter folder onto `model` under `name`."""
        from peft import PeftModel
        path = Path(path)
        if not (path / "adapter_config.json").exists():
            raise FileNotFoundError(f"adapter {name!r}: {path} is not a PEFT adapter folder (no adapter_config.json)")
        if (path / "tokenizer_config.json").exists() or (path / "tokenizer.json").exists():
            from transformers import AutoTokenizer
            check_same_vocab(self.tokenizer, AutoTokenizer.from_pretrained(path), f"adapter {name!r} ({path})")
        if model not in self.models:
            raise ValueError(f"adapter {name!r}: unknown model {model!r}; registered: {', '.join(self.models)}")
        base = self.models[model]
        self._check_expert_info(name, path, base)
        try:
            if isinstance(base, PeftModel):
                base.load_adapter(str(path), adapter_name=name)
            else:
                self.models[model] = PeftModel.from_pretrained(base, str(path), adapter_name=name)
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"adapter {name!r} ({path}) does not fit model {model!r}: {first}") from None
        self.models[model].eval()
        self.adapters[model].add(name)

    def _check_expert_info(self, name: str, path: Path, model) -> None:
        """mpg experts carry fingerprints of the base and tokenizer they were trained on: compare."""
        import json

        from .fingerprint import same_weights, vocab_fingerprint, weight_fingerprint
        from .personas import EXPERT_FILE
        info_path = path / EXPERT_FILE
        if not info_path.exists():
            return
        try:
            info = json.loads(info_path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"adapter {name!r}: {info_path} is unreadable ({e})") from None
        trained_on = info.get("base", "another model")
        if "vocab_fingerprint" in info and info["vocab_fingerprint"] != vocab_fingerprint(self.tokenizer):
            raise ValueError(f"adapter {name!r} ({path}) was trained with another tokenizer ({trained_on}); "
                             "it does not match this base model's tokenizer")
        if "weight_fingerprint" in info and not same_weights(info["weight_fingerprint"], weight_fingerprint(model)):
            raise ValueError(f"adapter {name!r} ({path}) was trained on another base model ({trained_on}); "
                             "its weight fingerprint does not match the loaded base")

    def add_model(self, name: str, model, tokenizer=None) -> None:
        """Register a separate causal LM; it must share the base tokenizer and output vocabulary."""
        if name in self.models:
            raise ValueError(f"a model named {name!r} is already registered")
        if tokenizer is not None:
            check_same_vocab(self.tokenizer, tokenizer, f"model {name!r}")
        v_base = self.models["base"].get_output_embeddings().weight.shape[0]
        v_new = model.get_output_embeddings().weight.shape[0]
        if v_new != v_base:
            raise ValueError(f"model {name!r} has an output vocabulary of {v_new} tokens but the base has {v_base}; "
                             "policies must score the same token set")
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

    # ---- contexts -----------------------------------------------------------------------------
    def context_ids(self, policy: Policy, prompt: str) -> list[int]:
        """Token ids of the policy's context for this prompt (chat template when the tokenizer has one)."""
        user = policy.template.replace("{prompt}", prompt)
        tok = self.tokenizer
        if self.use_chat_template:
            msgs = ([{"role": "system", "content": policy.system}] if policy.system is not None else [])
            msgs.append({"role": "user", "content": user})
            text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            return tok(text, add_special_tokens=False).input_ids
        text = (policy.system + "\n\n" if policy.system else "") + user
        return tok(text).input_ids

    def _check_policy(self, p: Policy) -> None:
        if p.model not in self.models:
            raise ValueError(f"policy refers to unknown model {p.model!r}; registered: {', '.join(self.models)}")
        if p.adapter is not None and p.adapter not in self.adapters[p.model]:
            have = ", ".join(sorted(self.adapters[p.model])) or "none"
            raise ValueError(f"unknown adapter {p.adapter!r} on model {p.model!r}; loaded adapters: {have}")
        for st in p.steering or ():
            if st.vector not in self.vectors:
                have = ", ".join(sorted(self.vectors)) or "none"
                raise ValueError(f"unknown steering vector {st.vector!r}; registered: {have}")

    # ---- generation ---------------------------------------------------------------------------
    def generate(self, prompts: str | list[str], attributes: list[Attribute] | None = None, *,
                 target: Target | None = None, aggregator: str = "product", lam: float = 1.0,
                 anchor: Policy | None = None, proposal: Policy | None = None, sampler: str = "scr",
                 max_new_tokens: int = 128, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                 stop: list[str] | None = None, eos_token_id: int | list[int] | None = None, streamer=None,
                 config: SamplerConfig | None = None, batch_size: int = 8, **sampler_kwargs) -> GenerateOutput:
        """Sample from the composed target for each prompt.

        Temperature and top-p act on the target: fused and speculative sample exactly
        top_p(softmax(log p~_1 / T)); scr targets p~_k^(1/T) restricted to chunks drawn from the
        proposal's own top-p nucleus. T = 1, top_p = 1 gives exactly SPEC's p_1 / p_k. T = 0 is greedy
        decoding of p_1 (fused, speculative). Extra keywords (chunk_size, window, margin, pilot,
        salvage, threshold, max_rejections, candidates) fill a SamplerConfig. Prompts are generated
        `batch_size` at a time, sharing every forward pass; each keeps its own random stream
        (seed * 1_000_003 + its index), so a seed gives the same output for the same batch size.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        if target is None:
            target = Target(tuple(attributes or ()), aggregator, lam, anchor or Policy(), proposal)
        unknown = set(sampler_kwargs) - set(SamplerConfig.__dataclass_fields__)
        if unknown:
            raise TypeError(f"generate() got unknown keyword(s): {', '.join(sorted(unknown))}")
        config = SamplerConfig(**{**(config.__dict__ if config else {}), **sampler_kwargs})
        config.validate()
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
        if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        if temperature == 0 and sampler == "scr":
            raise ValueError("temperature=0 is greedy decoding, which has no chunk-level weights; "
                             "use sampler='fused' or 'speculative'")
        if not (0 < top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
        if not prompts:
            raise ValueError("no prompts given")
        policies = {target.anchor, target.draft_policy, *(x for a in target.attributes for x in (a.num, a.den))}
        # An empty prompt is fine only where every context says something without it (role-play prompts).
        bare = any(not p.template.replace("{prompt}", "").strip() for p in policies)
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or (bare and not p.strip()):
                raise ValueError(f"prompt {i} is empty")
        if streamer is not None and len(prompts) > 1:
            raise ValueError("a streamer needs a single prompt (as in transformers)")
        for p in policies:
            self._check_policy(p)
        eos = eos_token_id if eos_token_id is not None else self._default_eos()
        eos = frozenset([eos] if isinstance(eos, int) else (eos or []))

        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        texts, ids, stats, labels = [], [], [], []
        for start in range(0, len(prompts), batch_size):
            part = prompts[start:start + batch_size]
            rngs = [torch.Generator().manual_seed(int(seed) * 1_000_003 + start + i) for i in range(len(part))]
            results, labels = self._generate_batch(part, target, sampler, config, max_new_tokens, temperature,
                                                   top_p, eos, stop or [], rngs, streamer)
            for out_ids, text, st in results:
                texts.append(text)
                ids.append(out_ids)
                stats.append(st)
        return GenerateOutput(texts, ids, stats, labels)

    def _default_eos(self):
        gen = getattr(self.models["base"], "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) if gen is not None else None
        return eos if eos is not None else self.tokenizer.eos_token_id

    def _unique_policies(self, prompts: list[str], target: Target):
        """The target's distinct policies (with their contexts per prompt) and its rows among them."""
        keys, policies, contexts = {}, [], []

        def row(p: Policy) -> int:
            ctx = tuple(tuple(self.context_ids(p, pr)) for pr in prompts)
            key = (p.model, p.adapter, p.steering, ctx)  # identical policies are scored once
            if key not in keys:
                keys[key] = len(policies)
                policies.append(p)
                contexts.append(ctx)
            return keys[key]

        anchor = row(target.anchor)
        num = [row(a.num) for a in target.attributes]
        den = [row(a.den) for a in target.attributes]
        rows = TargetRows(anchor, num, den, torch.tensor(target.normalised_weights(), dtype=torch.float32),
                          target.aggregator, float(target.lam))
        return policies, contexts, rows

    def _build(self, prompts: str | list[str], target: Target, need_drafter: bool):
        """Unique policies -> one PolicyGroup per model holding every prompt's rows; the target's rows."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        policies, contexts, rows = self._unique_policies(prompts, target)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        groups, index = [], [None] * len(policies)
        for name in dict.fromkeys(p.model for p in policies):
            members = [i for i, p in enumerate(policies) if p.model == name]
            groups.append(self._group(name, [policies[i] for i in members], [contexts[i] for i in members], pad))
            for r, i in enumerate(members):
                index[i] = (len(groups) - 1, r)
        drafter = None
        if need_drafter:
            q = target.draft_policy
            drafter = self._group(q.model, [q], [tuple(tuple(self.context_ids(q, pr)) for pr in prompts)], pad)
        return MultiPolicyScorer(groups, index, len(prompts)), drafter, rows, policies

    def _group(self, name: str, policies: list[Policy], contexts: list[tuple], pad: int) -> PolicyGroup:
        """Rows b * R + r: prompt b, policy r. contexts[r][b] is policy r's context for prompt b."""
        model = self.models[name]
        R, B = len(policies), len(contexts[0])
        deltas = row_deltas([p.steering for p in policies], self.vectors, model.config.hidden_size,
                            next(model.parameters()).device)
        deltas = {L: d.repeat(B, 1) for L, d in deltas.items()}                       # [B*R, H]
        return PolicyGroup(model, [p.adapter for _ in range(B) for p in policies],
                           [list(contexts[r][b]) for b in range(B) for r in range(R)], pad,
                           is_peft=_is_peft(model), steer_deltas=deltas,
                           row_seq=[b for b in range(B) for _ in range(R)], lora=self._multi_lora(name))

    def _multi_lora(self, name: str):
        """The multi-LoRA kernel for this model's adapters (None: PEFT's own mixed batch)."""
        from .kernels.lora import MultiLoRA
        model = self.models[name]
        if self.lora_kernel == "peft" or not _is_peft(model) or not self.adapters[name]:
            return None
        key = (name, tuple(sorted(self.adapters[name])), self.lora_kernel)
        if self._lora_cache.get(name, (None,))[0] != key:
            self._lora_cache[name] = (key, MultiLoRA(model, self.lora_kernel) if MultiLoRA.supports(model) else None)
        return self._lora_cache[name][1]

    @torch.inference_mode()
    def _generate_batch(self, prompts, target, sampler, config, max_new_tokens, temperature, top_p, eos, stop,
                        rngs, streamer):
        t0 = time.perf_counter()
        scorer, drafter, rows, policies = self._build(prompts, target, need_drafter=sampler != "fused")
        seqs = [Sequence(max_new_tokens, rng) for rng in rngs]
        batch = Batch(scorer, drafter, rows, config, float(temperature), float(top_p), eos, list(seqs))
        step = SAMPLERS[sampler]
        results: list = [None] * len(seqs)
        slot = {id(s): i for i, s in enumerate(seqs)}

        def finish(s, stopped_at):
            out = s.y[: stopped_at[0]] if stopped_at else s.y
            body = out[:-1] if out and out[-1] in eos else out
            text = self.tokenizer.decode(body, skip_special_tokens=True)
            if stopped_at:
                text = text[: stopped_at[1]]
            s.stats.new_tokens = len(out)
            s.stats.wall_time_s = time.perf_counter() - t0
            results[slot[id(s)]] = (out, text, s.stats)

        def done(s):
            return s.remaining <= 0 or (s.y and s.y[-1] in eos)

        for s in [s for s in batch.seqs if done(s)]:
            finish(s, None)
        batch.seqs = [s for s in batch.seqs if not done(s)]
        if len(batch.seqs) < len(seqs):
            self._select(batch, [slot[id(s)] for s in batch.seqs], list(range(len(seqs))))
        active_ids = [slot[id(s)] for s in batch.seqs]
        while batch.seqs:
            before = [len(s.y) for s in batch.seqs]
            step(batch)
            keep = []
            for s, n0 in zip(batch.seqs, before):
                stopped_at = _find_stop(self.tokenizer, s.y, n0, stop) if stop else None
                end = stopped_at[0] if stopped_at else len(s.y)
                if streamer is not None and end > n0:
                    streamer.put(torch.tensor(s.y[n0:end]))
                if stopped_at or done(s):
                    finish(s, stopped_at)
                else:
                    keep.append(s)
            if len(keep) < len(batch.seqs):
                new_ids = [slot[id(s)] for s in keep]
                self._select(batch, new_ids, active_ids)
                active_ids = new_ids
                batch.seqs = keep
        if streamer is not None:
            streamer.end()
        # forward passes are shared by the batch: every sequence reports the passes it took part in
        labels = [p.label() for p in policies]
        for s in seqs:
            st = s.stats
            for gi, g in enumerate(scorer.groups):
                for i, (gj, _) in enumerate(scorer.index):
                    if gj == gi:
                        st.forward_passes[labels[i]] = st.forward_passes.get(labels[i], 0) + g.forward_passes
                st.model_calls += g.forward_passes
            if drafter is not None:
                key = "proposal:" + target.draft_policy.label()
                st.forward_passes[key] = drafter.forward_passes
                st.model_calls += drafter.forward_passes
        return results, labels

    @staticmethod
    def _select(batch, keep_ids: list[int], active_ids: list[int]) -> None:
        """Drop finished sequences' rows from every cache (keep_ids, active_ids: original slots)."""
        pos = {sid: i for i, sid in enumerate(active_ids)}
        keep = [pos[sid] for sid in keep_ids]
        batch.scorer.select(keep)
        if batch.drafter is not None:
            rows = torch.tensor(keep, dtype=torch.long)
            batch.drafter.select(rows, torch.arange(len(keep)))


def _find_stop(tokenizer, y: list[int], new_from: int, stop: list[str]):
    """(tokens to keep, characters to keep) if a stop string appears in the text, else None."""
    text = tokenizer.decode(y, skip_special_tokens=True)
    hits = [(text.find(s), s) for s in stop if s and s in text]
    if not hits:
        return None
    cut = min(h for h, _ in hits)
    for n in range(max(new_from, 1), len(y) + 1):  # shortest token prefix whose text reaches the stop string
        if len(tokenizer.decode(y[:n], skip_special_tokens=True)) > cut:
            return n, cut
    return len(y), cut


def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def check_same_vocab(base_tok, other_tok, what: str) -> None:
    a, b = base_tok.get_vocab(), other_tok.get_vocab()
    if a != b:
        diff = len(set(a.items()) ^ set(b.items()))
        raise ValueError(f"{what} uses a different tokenizer from the base ({len(b)} vs {len(a)} tokens, "
                         f"{diff} entries differ); policies must share one tokenizer")
