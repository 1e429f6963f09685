"""The engine: models and adapters by name, policy contexts, and `generate()` in the transformers idiom."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch

from .expert_file import check_expert_info
from .generation import GenerateConfig, GenerateOutput, build_target
from .policies import Attribute, Policy, Target
from .policy_table import PolicyTable, check_policy, is_peft, render_context
from .running import BatchSettings, RunningBatch
from .samplers import SamplerConfig
from .samplers.common import Sequence, prompt_rng
from .scoring import HeadCache, MultiPolicyScorer, PolicyGroup
from .steering import row_deltas
from .tokens import eos_token_ids, pad_token_id

__all__ = ["Engine", "GenerateOutput", "check_same_vocab"]


HEAD_PROBE = "\x00"  # a prompt no user writes: a context's head is what it shares with the probe's


def common_prefix(a, b) -> int:
    """The number of leading tokens a and b share."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


class Engine:
    """Holds one base model (with LoRA adapters) plus optional separate models sharing its tokenizer."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        use_chat_template: bool | None = None,
        lora_kernel: str = "stacked",
        head_cache_size: int = 32,
    ):
        """head_cache_size: context heads (a policy's tokens before the prompt) whose keys and values are
        kept for reuse by later batches (0: none; about 9 MB each for SmolLM2-135M's ~200-token heads)."""
        model.eval()
        self.head_cache_size = head_cache_size
        self._head_caches: dict[str, HeadCache] = {}  # model name -> its heads
        if lora_kernel not in ("stacked", "gathered", "peft"):
            raise ValueError(f"lora_kernel must be 'stacked', 'gathered' or 'peft', got {lora_kernel!r}")
        self.lora_kernel = lora_kernel  # how rows with different LoRA adapters share one forward
        self._lora_cache: dict = {}
        self.tokenizer = tokenizer
        self.models = {"base": model}
        self.adapters: dict[str, set[str]] = {"base": set()}
        self.vectors: dict[str, torch.Tensor] = {}  # steering vectors by name: [n_layers, H]
        self.use_chat_template = (
            getattr(tokenizer, "chat_template", None) is not None
            if use_chat_template is None
            else use_chat_template
        )

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        *,
        adapters: dict[str, str] | None = None,
        device: str = "cpu",
        dtype: torch.dtype | str | None = None,
        device_map: str | dict | None = None,
        offload_folder: str | Path | None = None,
        **kwargs,
    ) -> "Engine":
        """Load a local Hugging Face model folder (None: the embedded SmolLM2 default) and adapters.

        device_map: place a base too large for one device across several with accelerate's big-model
        loading ("auto", "balanced", ... or an explicit {module name: device} dict; "disk" entries need
        `offload_folder`). The engine feeds inputs to the first device and reads logits from the last;
        adapters, steering, the scorer and the samplers work unchanged. Without it, the whole model goes
        to `device`. dtype: a torch dtype or its name ("bfloat16", "auto": the checkpoint's); None:
        `mpg.hardware.default_dtype(device)`, bfloat16 on a CPU with native bf16 (AVX512-BF16 / AMX),
        where it decodes 1.5-1.7x faster than float32, and float32 elsewhere and with a device_map."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .default_model import default_base_path
        from .hardware import default_dtype

        path = Path(path) if path is not None else default_base_path()
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"base model folder {path} has no config.json (not a Hugging Face model folder)"
            )
        if dtype is None:  # with a device map the model spans devices: float32, as before (not measured)
            dtype = default_dtype(device) if device_map is None else torch.float32
        elif isinstance(dtype, str) and dtype != "auto":
            if not isinstance(getattr(torch, dtype, None), torch.dtype):
                raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or auto")
            dtype = getattr(torch, dtype)
        tok = AutoTokenizer.from_pretrained(path)
        if device_map is None:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype, device_map=device_map, offload_folder=offload_folder
            )
        engine = cls(model, tok, **kwargs)
        for name, adapter_path in (adapters or {}).items():
            engine.load_adapter(name, adapter_path)
        return engine

    def load_adapter(self, name: str, path: str | Path, model: str = "base") -> None:
        """Load a PEFT LoRA adapter folder onto `model` under `name`."""
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
        try:
            with warnings.catch_warnings():
                # PEFT 0.21 reads model.is_gradient_checkpointing, which transformers 5.24 deprecates: a
                # FutureWarning on every load about PEFT's own call, which no mpg user can act on
                warnings.filterwarnings(
                    "ignore", message=".*is_gradient_checkpointing", category=FutureWarning
                )
                if isinstance(base, PeftModel):
                    base.load_adapter(str(path), adapter_name=name)
                else:
                    self.models[model] = PeftModel.from_pretrained(base, str(path), adapter_name=name)
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"adapter {name!r} ({path}) does not fit model {model!r}: {first}") from None
        self.models[model].eval()
        self.adapters[model].add(name)
        self._head_caches.pop(model, None)

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
        self._head_caches.clear()  # cached heads of steered policies may have used the old vector

    # ---- contexts -----------------------------------------------------------------------------
    def context_ids(self, policy: Policy, prompt: str) -> list[int]:
        """Token ids of the policy's context for this prompt (chat template when the tokenizer has one)."""
        user = policy.template.replace("{prompt}", prompt)
        tok = self.tokenizer
        if self.use_chat_template:
            msgs = [{"role": "system", "content": policy.system}] if policy.system is not None else []
            msgs.append({"role": "user", "content": user})
            text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            return tok(text, add_special_tokens=False).input_ids
        text = (policy.system + "\n\n" if policy.system else "") + user
        return tok(text).input_ids

    # ---- generation ---------------------------------------------------------------------------
    def generate(
        self,
        prompts: str | list[str],
        attributes: list[Attribute] | None = None,
        *,
        target: Target | None = None,
        policy: Policy | None = None,
        aggregator: str | None = None,
        lam: float | None = None,
        anchor: Policy | None = None,
        proposal: Policy | str | None = None,
        streamer=None,
        config: SamplerConfig | None = None,
        **kwargs,
    ) -> GenerateOutput:
        """Sample from the composed target (or from `target=`, or from one `policy=` alone) for each prompt.

        Keywords (validated by GenerateConfig): sampler ["fused"], max_new_tokens [128], temperature [1.0],
        top_p [1.0], seed [0], stop [none], eos_token_id [model + tokenizer EOS; [] never stops],
        batch_size [8], and SamplerConfig's knobs (chunk_size, window, margin, quantile, pilot, salvage,
        threshold, max_rejections, candidates, adaptive_chunk, max_chunk_size) on top of `config`.
        aggregator ["product"], lam [1.0], anchor [the base under the plain prompt] and proposal [the
        anchor; a Policy or "anchor" / "merged" / "prompt", see mpg.proposals] build the target.

        Temperature and top-p act on the target: fused and speculative sample exactly
        top_p(softmax(log p~_1 / T)); scr targets p~_k^(1/T) restricted to chunks drawn from the
        proposal's own top-p nucleus (and, with a plausibility constraint, its own plausible set:
        drafts are kept there, samplers.common.proposal_logprobs). T = 1, top_p = 1 gives exactly
        SPEC's p_1 / p_k; T = 0 is greedy decoding of p_1 (fused, speculative). Prompts are generated
        `batch_size` at a time, sharing every forward pass; each keeps its own random stream
        (seed * 1_000_003 + its index), so a seed gives the same output for the same batch size.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        target = build_target(target, policy, attributes, aggregator, lam, anchor, proposal, engine=self)
        cfg = GenerateConfig.from_kwargs(config, **kwargs)
        check_prompts(prompts, target)
        if streamer is not None and len(prompts) > 1:
            raise ValueError("a streamer needs a single prompt (as in transformers)")
        for p in [*target.policies(), target.draft_policy]:  # every policy valid before any work
            check_policy(self, p)
        eos = eos_token_ids(self.models["base"], self.tokenizer, cfg.eos_token_id)
        out = GenerateOutput([], [], [])
        for start in range(0, len(prompts), cfg.batch_size):
            part = prompts[start : start + cfg.batch_size]
            rngs = [prompt_rng(cfg.seed, start + i) for i in range(len(part))]
            results, batch_stats, out.policies = self._generate_batch(part, target, cfg, eos, rngs, streamer)
            batch_stats.prompts = list(range(start, start + len(part)))
            out.batches.append(batch_stats)
            for ids, text, st in results:
                out.texts.append(text)
                out.token_ids.append(ids)
                out.stats.append(st)
        return out

    def policy_table(self, target: Target, prompts: str | list[str]) -> PolicyTable:
        """The target's distinct policies, their contexts for these prompts and the target's rows."""
        return PolicyTable.for_target(self, target, [prompts] if isinstance(prompts, str) else list(prompts))

    def build_scorer(self, table: PolicyTable) -> MultiPolicyScorer:
        """One PolicyGroup per model holding every prompt's rows of the table's policies."""
        groups, index = [], [None] * len(table.policies)
        for name, members in table.by_model():
            groups.append(
                self.policy_group(
                    name, [table.policies[i] for i in members], [table.contexts[i] for i in members]
                )
            )
            for r, i in enumerate(members):
                index[i] = (len(groups) - 1, r)
        return MultiPolicyScorer(groups, index, len(table.contexts[0]))

    def policy_group(
        self, name: str, policies: list[Policy], contexts: list[tuple], *, multi_lora: bool = True
    ) -> PolicyGroup:
        """Rows b * R + r: prompt b, policy r, all on model `name`; contexts[r][b] is policy r's context
        for prompt b. multi_lora=False runs LoRA rows through PEFT's own path (the MOD-style reference)."""
        model = self.models[name]
        R, B = len(policies), len(contexts[0])
        deltas = row_deltas(
            [p.steering for p in policies],
            self.vectors,
            model.config.hidden_size,
            next(model.parameters()).device,
        )
        deltas = {L: d.repeat(B, 1) for L, d in deltas.items()}  # [B*R, H]
        # each policy's context head (everything before the prompt) is prefilled once and cached
        probes = [render_context(self, p, HEAD_PROBE) for p in policies]
        hint = [common_prefix(probes[r], contexts[r][b]) for b in range(B) for r in range(R)]
        heads = multi_lora and self.head_cache_size > 0  # the MOD-style reference keeps the plain prefill
        if heads and name not in self._head_caches:
            self._head_caches[name] = HeadCache(self.head_cache_size)
        return PolicyGroup(
            model,
            [p.adapter for _ in range(B) for p in policies],
            [list(contexts[r][b]) for b in range(B) for r in range(R)],
            pad_token_id(self.tokenizer),
            is_peft=is_peft(model),
            steer_deltas=deltas,
            row_seq=[b for b in range(B) for _ in range(R)],
            lora=self._multi_lora(name) if multi_lora else None,
            family=[r for _ in range(B) for r in range(R)] if heads else None,
            head_hint=hint,
            weights_key=[(p.adapter, p.steering) for _ in range(B) for p in policies],
            head_cache=self._head_caches.get(name) if heads else None,
        )

    def _multi_lora(self, name: str):
        """The multi-LoRA kernel for this model's adapters (None: PEFT's own mixed batch)."""
        from .kernels.lora import MultiLoRA

        model = self.models[name]
        if self.lora_kernel == "peft" or not is_peft(model) or not self.adapters[name]:
            return None
        key = (name, tuple(sorted(self.adapters[name])), self.lora_kernel)
        if self._lora_cache.get(name, (None,))[0] != key:
            self._lora_cache[name] = (
                key,
                MultiLoRA(model, self.lora_kernel) if MultiLoRA.supports(model) else None,
            )
        return self._lora_cache[name][1]

    @torch.inference_mode()
    def _generate_batch(self, prompts, target, cfg: GenerateConfig, eos, rngs, streamer):
        t0 = time.perf_counter()
        settings = BatchSettings(
            cfg.sampler, float(cfg.temperature), float(cfg.top_p), cfg.sampler_config, eos
        )
        run = RunningBatch(self, target, settings)
        seqs = [Sequence(cfg.max_new_tokens, rng) for rng in rngs]
        members = run.join(prompts, seqs, [cfg.stop] * len(prompts))
        while True:
            for _, new in run.settle():
                if streamer is not None and new:
                    streamer.put(torch.tensor(new))
            if not len(run):
                break
            run.step()
        if streamer is not None:
            streamer.end()
        stats = run.batch_stats()
        stats.wall_time_s = time.perf_counter() - t0
        for s in seqs:  # every sequence reports its batch's shared passes (SequenceStats says so)
            s.stats.forward_passes, s.stats.model_calls = dict(stats.forward_passes), stats.model_calls
        return [(m.tokens, m.text, m.seq.stats) for m in members], stats, run.labels


def check_prompts(prompts: list[str], target: Target) -> None:
    """Prompts must be strings; an empty one only where every context says something without it."""
    if not prompts:
        raise ValueError("no prompts given")
    bare = any(
        not p.template.replace("{prompt}", "").strip() for p in [*target.policies(), target.draft_policy]
    )
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or (bare and not p.strip()):
            raise ValueError(f"prompt {i} is empty")


def check_same_vocab(base_tok, other_tok, what: str) -> None:
    a, b = base_tok.get_vocab(), other_tok.get_vocab()
    if a != b:
        diff = len(set(a.items()) ^ set(b.items()))
        raise ValueError(
            f"{what} uses a different tokenizer from the base ({len(b)} vs {len(a)} tokens, "
            f"{diff} entries differ); policies must share one tokenizer"
        )
