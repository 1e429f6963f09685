"""The engine: the public face of mpg. Models, adapters and steering vectors by name (`Registry`),
policy contexts (`ChatRenderer`), and `generate()` in the transformers idiom; it builds the scorer and
drafter rows a running batch is handed (`prepare`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from .chat import HEAD_PROBE, ChatRenderer, Conversation, Prompt, common_prefix, prompt_text
from .draft_head import SHIPPED_HEAD, DraftHead, load_draft_head
from .generation import GenerateConfig, GenerateOutput, build_target, check_sampler_target
from .policies import Attribute, Policy, Target
from .policy_table import PolicyTable
from .registry import Registry, check_same_vocab, is_peft
from .running import Member, Pending, RunningBatch
from .samplers import SAMPLERS, Batch, SamplerConfig, Sequence, SequenceSettings, prompt_rng
from .samplers.drafting import PolicyDrafter
from .samplers.head_drafter import HeadDrafter
from .scoring import MultiPolicyScorer, PolicyGroup
from .steering import row_deltas
from .tokens import eos_token_ids, pad_token_id

__all__ = ["Engine", "GenerateOutput", "check_same_vocab"]


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
        kept for reuse by later batches (0: none); lora_kernel: how rows with different LoRA adapters
        share one forward ("stacked", "gathered", or "peft": PEFT's own mixed batch)."""
        self.registry = Registry(model, tokenizer, lora_kernel=lora_kernel, head_cache_size=head_cache_size)
        self.chat = ChatRenderer(tokenizer, use_chat_template)
        self.draft_head: DraftHead | None = None  # proposal="head" (load_draft_head, set_draft_head)
        self._head_looked_up = False
        self._head_notes: set[str] = set()

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
        `mpg.hardware.default_dtype(device)`: bfloat16 on a CPU with native bf16 (AVX512-BF16 / AMX),
        where it measured faster (docs/results.md#speed), float32 elsewhere and with a device_map."""
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

    # ---- the registry's names, read everywhere --------------------------------------------------
    @property
    def tokenizer(self):
        return self.registry.tokenizer

    @property
    def models(self) -> dict:
        return self.registry.models

    @property
    def adapters(self) -> dict[str, set[str]]:
        return self.registry.adapters

    @property
    def vectors(self) -> dict[str, torch.Tensor]:
        return self.registry.vectors

    @property
    def head_cache_size(self) -> int:
        return self.registry.head_cache_size

    @head_cache_size.setter
    def head_cache_size(self, n: int) -> None:
        self.registry.head_cache_size = n

    @property
    def use_chat_template(self) -> bool:
        return self.chat.use_chat_template

    # ---- weights ---------------------------------------------------------------------------------
    def load_adapter(self, name: str, path: str | Path, model: str = "base") -> None:
        """Load a PEFT LoRA adapter folder onto `model` under `name` (`Registry.load_adapter`)."""
        self.registry.load_adapter(name, path, model)

    def add_model(self, name: str, model, tokenizer=None) -> None:
        """Register a separate causal LM; it must share the base tokenizer and output vocabulary."""
        self.registry.add_model(name, model, tokenizer)

    def add_steering_vector(self, name: str, vector: torch.Tensor) -> None:
        """Register a steering vector: [n_layers, H] (one per decoder block) or [H] (the same at every block)."""
        self.registry.add_steering_vector(name, vector)

    def add_lora_sum(self, name: str, coefficients: dict[str, float], model: str = "base") -> None:
        """Register one adapter equal to a weighted sum of loaded ones (the "merged" proposal)."""
        self.registry.add_lora_sum(name, coefficients, model)

    # ---- contexts and validation ------------------------------------------------------------------
    def context_ids(self, policy: Policy, prompt: Prompt) -> list[int]:
        """Token ids of the policy's context for this prompt (chat template when the tokenizer has one)."""
        return self.chat.context_ids(policy, prompt)

    def check_target(self, target: Target) -> None:
        """A clear error, before any work, if the target or its proposal names weights that are not here."""
        for p in dict.fromkeys([*target.policies(), target.draft_policy]):
            self.registry.check_policy(p)

    # ---- the draft head (proposal="head") ----------------------------------------------------------
    def load_draft_head(self, folder: str | Path | None = None) -> DraftHead:
        """Load the head proposal="head" drafts with: from `folder` (`mpg train-draft` writes one), or
        None: the one shipped for the embedded default base (an error if this base is another)."""
        model = self.models["base"]
        head = load_draft_head(SHIPPED_HEAD if folder is None else folder, model)
        self.draft_head = head.to(next(model.parameters()).device, torch.float32)
        return self.draft_head

    def set_draft_head(self, head: DraftHead | None) -> None:
        """Use `head` (a `DraftHead` for this base) for proposal="head"; None: no head (anchor drafts)."""
        if head is not None:
            c = self.models["base"].config
            if (head.config.hidden_size, head.config.vocab_size) != (c.hidden_size, c.vocab_size):
                raise ValueError("the draft head's hidden size or vocabulary is not this base's")
        self.draft_head = head

    def find_draft_head(self) -> DraftHead | None:
        """The draft head in use; if none was set, the shipped one when it fits this base (looked up once)."""
        if self.draft_head is None and not self._head_looked_up:
            self._head_looked_up = True
            try:
                self.load_draft_head()
            except (FileNotFoundError, ValueError):
                pass
        return self.draft_head

    def _head_for(self, targets: list[Target], scorer: MultiPolicyScorer) -> DraftHead | None:
        """The draft head for these targets, or None with a one-line note on stderr saying why not."""
        self.find_draft_head()
        why = None
        if self.draft_head is None:
            why = "no draft head for this base (mpg train-draft makes one; Engine.load_draft_head loads it)"
        elif any(t.aggregator != "product" for t in targets):
            why = "the draft head reads a product's composed features; a mixture target has none"
        elif any(p.model != "base" for t in targets for p in t.policies()):
            why = "the draft head reads the base's features; this target scores a separate model"
        elif not scorer.head_skippable:
            why = "this model cannot hand its hidden states to the draft head"
        if why is None:
            return self.draft_head
        if why not in self._head_notes:
            self._head_notes.add(why)
            print(f"mpg: note: proposal 'head' drafts from the anchor instead: {why}", file=sys.stderr)
        return None

    def check_policies(self, policies: list[Policy]) -> None:
        for p in dict.fromkeys(policies):
            self.registry.check_policy(p)

    # ---- generation ---------------------------------------------------------------------------
    def generate(
        self,
        prompts: Prompt | list[Prompt],
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
        batch_size [8], and the samplers' knobs (chunk_size, adaptive_chunk, max_chunk_size; SCR's
        window, margin, quantile, pilot, salvage, threshold, max_rejections, candidates) on top of
        `config`. aggregator ["product"], lam [1.0], anchor [the base under the plain prompt] and proposal
        [the anchor; a Policy or "anchor" / "merged" / "prompt", see mpg.proposals] build the target.
        A prompt is a string or an `mpg.chat.Conversation` (earlier turns and the last user message).

        Temperature and top-p act on the target: fused and speculative sample exactly
        top_p(softmax(log p~_1 / T)); scr targets p~_k^(1/T) restricted to chunks drawn from the
        proposal's own top-p nucleus (and, with a plausibility constraint, its own plausible set:
        drafts are kept there, `mpg.samplers.drafting.proposal_logprobs`). T = 1, top_p = 1 gives
        exactly SPEC's p_1 / p_k; T = 0 is greedy decoding of p_1 (fused, speculative). Prompts are
        generated `batch_size` at a time, sharing every forward pass; each keeps its own random stream
        (seed * 1_000_003 + its index), so a seed gives the same output for the same batch size.
        """
        prompts = [prompts] if isinstance(prompts, (str, Conversation)) else list(prompts)
        target = build_target(target, policy, attributes, aggregator, lam, anchor, proposal, engine=self)
        cfg = GenerateConfig.from_kwargs(config, **kwargs)
        check_prompts(prompts, target)
        if streamer is not None and len(prompts) > 1:
            raise ValueError("a streamer needs a single prompt (as in transformers)")
        self.check_target(target)
        check_sampler_target(cfg.sampler, target)
        eos = eos_token_ids(self.models["base"], self.tokenizer, cfg.eos_token_id)
        settings = SequenceSettings(
            cfg.sampler, float(cfg.temperature), float(cfg.top_p), cfg.sampler_config, eos
        )
        out = GenerateOutput([], [], [])
        for start in range(0, len(prompts), cfg.batch_size):
            part = prompts[start : start + cfg.batch_size]
            seqs = [
                Sequence(cfg.max_new_tokens, prompt_rng(cfg.seed, start + i), settings)
                for i in range(len(part))
            ]
            results, batch_stats, out.policies = self._generate_batch(part, target, seqs, cfg.stop, streamer)
            batch_stats.prompts = list(range(start, start + len(part)))
            out.batches.append(batch_stats)
            for ids, text, st in results:
                out.texts.append(text)
                out.token_ids.append(ids)
                out.stats.append(st)
        return out

    @torch.inference_mode()
    def _generate_batch(self, prompts, target: Target, seqs: list[Sequence], stop, streamer):
        t0 = time.perf_counter()
        run = RunningBatch(SAMPLERS[seqs[0].settings.sampler], self.tokenizer)
        members = run.join(self.prepare([(target, p, s, list(stop), None) for p, s in zip(prompts, seqs)]))
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
        return [(m.tokens, m.text, m.seq.stats) for m in members], stats, list(run.scored)

    # ---- rows for the samplers -----------------------------------------------------------------
    def policy_table(self, target: Target, prompts: Prompt | list[Prompt]) -> PolicyTable:
        """The target's distinct policies, their contexts for these prompts and the target's rows."""
        prompts = [prompts] if isinstance(prompts, (str, Conversation)) else list(prompts)
        return PolicyTable.for_target(self.chat, target, prompts)

    def prepare(self, requests: list[tuple], *, prefill: bool = True) -> Pending:
        """The rows of new sequences, ready to join a running batch: requests are (target, prompt,
        Sequence, stop strings, tag), all of one sampler, with validated targets. Each sequence's
        policies (its policy table), the scorer's rows for all of them and, for a drafting sampler, one
        drafter row each. prefill=False leaves the contexts' tails to `Pending.prefill` (in pieces)."""
        sampler = SAMPLERS[requests[0][2].settings.sampler]
        for t, *_ in requests:
            check_sampler_target(sampler.name, t)
        tables = [PolicyTable.for_target(self.chat, t, [p]) for t, p, *_ in requests]
        scorer = self.build_scorer_rows([tb.sequence(0) for tb in tables], defer_prefill=not prefill)
        drafter, draft_labels = None, []
        head = None
        if sampler.drafts and all(t.proposal == "head" for t, *_ in requests):
            head = self._head_for([t for t, *_ in requests], scorer)
        if head is not None:
            model = self.models["base"]
            drafter = HeadDrafter(
                head, model.get_input_embeddings(), model.get_output_embeddings(), len(requests)
            )
            draft_labels = ["draft-head"] * len(requests)
        elif sampler.drafts:
            rows = []
            for (t, p, *_), tb in zip(requests, tables):
                q = t.draft_policy
                index = tb.index()
                ctx = tb.contexts[index[q]][0] if q in index else tuple(self.chat.render(q, p))
                rows.append([(q, ctx)])
                draft_labels.append(q.label())
            drafter = PolicyDrafter(self.build_scorer_rows(rows, defer_prefill=not prefill))
        seqs = [r[2] for r in requests]
        batch = Batch(scorer, drafter, [tb.rows for tb in tables], seqs)
        members = [Member(s, p, list(stop or []), tag) for _, p, s, stop, tag in requests]
        return Pending(batch, members, [tb.labels() for tb in tables], draft_labels or [""] * len(seqs))

    def build_scorer(self, table: PolicyTable, *, multi_lora: bool = True) -> MultiPolicyScorer:
        """The scorer of one table: every prompt's rows of the table's policies."""
        return self.build_scorer_rows(
            [table.sequence(b) for b in range(table.n_prompts)], multi_lora=multi_lora
        )

    def build_scorer_rows(
        self,
        seqs: list[list[tuple[Policy, tuple[int, ...]]]],
        *,
        multi_lora: bool = True,
        defer_prefill: bool = False,
    ) -> MultiPolicyScorer:
        """A scorer over sequences that each have their own (policy, context) rows: one PolicyGroup per
        model, rows in sequence order. Rows of one policy share its context head (prefilled once, and
        kept in the registry's head cache). multi_lora=False runs LoRA rows through PEFT's own path and
        prefills without shared heads (the MOD-style reference)."""
        models = list(dict.fromkeys(p.model for rows in seqs for p, _ in rows))
        probes: dict[Policy, list[int]] = {}  # each policy's context for a probe prompt: where its head ends
        hints = [
            [common_prefix(probes.setdefault(p, self.chat.render(p, HEAD_PROBE)), c) for p, c in rows]
            for rows in seqs
        ]
        groups, slots = [], [[None] * len(rows) for rows in seqs]
        for name in models:
            members = [
                (b, j) for b, rows in enumerate(seqs) for j, (p, _) in enumerate(rows) if p.model == name
            ]
            for r, (b, j) in enumerate(members):
                slots[b][j] = (len(groups), r)
            groups.append(
                self.policy_group(
                    name,
                    [seqs[b][j] for b, j in members],
                    [b for b, _ in members],
                    [hints[b][j] for b, j in members],
                    multi_lora=multi_lora,
                    defer_prefill=defer_prefill,
                )
            )
        return MultiPolicyScorer(groups, slots, models)

    def policy_group(
        self,
        name: str,
        rows: list[tuple[Policy, tuple[int, ...]]],
        row_seq: list[int],
        head_hint: list[int],
        *,
        multi_lora: bool = True,
        defer_prefill: bool = False,
    ) -> PolicyGroup:
        """One group of rows (policy, context) on model `name`; row i scores sequence row_seq[i], and its
        context's first head_hint[i] tokens are its policy's own (what rows of one policy may share)."""
        model = self.models[name]
        policies = [p for p, _ in rows]
        deltas = row_deltas(
            [p.steering for p in policies],
            self.vectors,
            model.config.hidden_size,
            next(model.parameters()).device,
        )  # {layer: [N, H]}
        heads = multi_lora and self.head_cache_size > 0  # the MOD-style reference keeps the plain prefill
        return PolicyGroup(
            model,
            [p.adapter for p in policies],
            [list(c) for _, c in rows],
            pad_token_id(self.tokenizer),
            is_peft=is_peft(model),
            steer_deltas=deltas,
            row_seq=row_seq,
            lora=self.registry.multi_lora(name) if multi_lora else None,
            family=policies if heads else None,
            head_hint=head_hint,
            weights_key=[(p.adapter, p.steering) for p in policies],
            head_cache=self.registry.head_cache(name) if heads else None,
            defer_prefill=defer_prefill,
        )


def check_prompts(prompts: list, target: Target) -> None:
    """Prompts must be strings (or conversations); an empty one only where every context says something
    without it."""
    if not prompts:
        raise ValueError("no prompts given")
    bare = any(
        not p.template.replace("{prompt}", "").strip() for p in [*target.policies(), target.draft_policy]
    )
    for i, p in enumerate(prompts):
        if not isinstance(p, (str, Conversation)) or (bare and not prompt_text(p).strip()):
            raise ValueError(f"prompt {i} is empty")
