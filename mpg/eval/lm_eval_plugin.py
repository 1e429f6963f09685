"""lm-evaluation-harness model "mpg": a persona target (mpg.eval.methods) as an lm-eval LM.

    mpg-lm-eval --model mpg --model_args persona=ENTJ,experts=shipped,method=fused_mixture \\
        --tasks mbti_16p --metadata data_path=../shared/data/mbti/questionnaire_16p.json

`mpg-lm-eval` (= `python -m mpg.eval.lm_eval_cli`) is lm-eval's own CLI with this model registered and
mpg's tasks on the path. lm-eval 0.4.13 has no plugin discovery; releases that read the
"lm_eval.models" entry-point group (declared in pyproject.toml) take plain `lm_eval --model mpg`, and
0.4.13 does too when the task is given by path (`--tasks <mpg>/eval/tasks/mbti_16p/mbti_16p.yaml`).

model_args:
  base=PATH           local Hugging Face model folder (default: the embedded SmolLM2-135M-Instruct)
  persona=ENTJ        MBTI type (or letter weights E=1,N=0.5); default ENTJ unless role-play is given
  profile=, personality=   role-play persona instead of an MBTI type (give both; use the JSON form of
                      --model_args for texts with commas)
  experts=shipped     shipped | prompted (training-free, no adapters) | a folder of expert adapters
  method=fused_mixture   a name of mpg.eval.methods.METHODS. Default fused_mixture: the MPG paper's
                      aggregator with an exact, normalised token-level likelihood (so lm-eval's
                      perplexity metrics mean what they say) and exact sampling
  max_gen_toks=256, seed=0
  vectors=PATH, layer=20, alpha=2.0   persona vectors for method=billy (merged over the type's letters)

Requests:
  loglikelihood(context, continuation): the context is the user prompt of every policy (each under its
    own system prompt / template / chat template); the continuation is the start of the assistant's
    response. Scored in the method's mode: "token" (exact log p_1) for fused/speculative/policy methods,
    "chunk" (log p~ of the whole continuation as one chunk, unnormalised; its normaliser is shared by all
    options after one context, so multiple-choice accuracy is exact) for scr_k*. is_greedy: every token
    is the argmax of p_1 (the token-level target), in both modes.
  loglikelihood_rolling(text): the text as the response to an empty user prompt, token mode.
  Cost (batched_logliks): one call's distinct contexts share one mpg.likelihood.PolicyScorer, so
    each policy's context head (system prompt, persona template, chat markup) comes from the engine's
    head cache. Then one forward per model group takes several contexts' own tails together (about
    FEED columns), each followed by its options as branches of the scorer's cache (an option sees its
    context and itself), so a two-option item costs a share of one forward instead of three. Scores equal target_logliks' per context (float rounding); options longer
    than BLOCK tokens are scored block by block as there.
  generate_until(context, gen_kwargs): engine.generate(..., stop=until, max_new_tokens=max_gen_toks);
    do_sample=False / temperature 0 is greedy decoding of p_1. SCR has no greedy mode: it then samples at
    temperature 1 (seeded).
Do not pass --apply_chat_template: every policy already applies its own chat context.

Data parallel: under `accelerate launch --multi_gpu --num_processes N -m lm_eval --model mpg ...` (or
`-m mpg.eval.lm_eval_cli`, or torchrun; WORLD_SIZE > 1) the model takes its rank and world size from
accelerate (torch.distributed: NCCL with each process on its own GPU; gloo on the CPU with --device cpu
or where there is no GPU) and lm-eval gives each rank its share of the documents and gathers the results
through all_gather / gather_object / barrier, as with lm-eval's `hf` model. On a CPU-only machine use
`--multi_gpu` too: accelerate 1.15's `--cpu --num_processes N` starts ONE process unless given an mpirun
hostfile. One process: rank 0 of 1, nothing initialised. generate_until seeds each request by its index
in this rank's share, so sampled generations differ from a one-process run (log-likelihoods do not).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from datetime import timedelta

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from ..likelihood import (
    MODES,
    PolicyScorer,
    continuation_ids,
    option_scores,
    pad_options,
    target_logliks,
    target_policies,
)
from ..tokens import pad_token_id
from .methods import (
    generate_kwargs,
    get_method,
    mbti_target,
    register_merged_vector,
    roleplay_target,
)

DEFAULT_METHOD = "fused_mixture"
BLOCK = 256  # option tokens' log-probs kept per forward (target_logliks' block): bounds [P, K, T, V] memory
FEED = 256  # columns (prompt tails + option tokens) per batched forward: several prompts share one forward
log = logging.getLogger(__name__)


def _device(device: str | None) -> str:
    """lm-eval passes device=cuda:0 by default; fall back to the CPU where there is no GPU."""
    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        return "cpu"
    return str(device)


def _process_device(device: torch.device) -> str:
    """This process's device under accelerate: cuda:LOCAL_RANK as is; the CPU as plain "cpu"."""
    return "cpu" if device.type == "cpu" else str(device)


@register_model("mpg")
class MPGLM(LM):
    """An lm-eval LM whose distribution is a persona target over the mpg engine's policies."""

    def __init__(
        self,
        base: str | None = None,
        persona: str | None = None,
        experts: str = "shipped",
        profile: str | None = None,
        personality: str | None = None,
        method: str = DEFAULT_METHOD,
        max_gen_toks: int = 256,
        seed: int = 0,
        vectors: str | None = None,
        layer: int = 20,
        alpha: float = 2.0,
        device: str | None = None,
        batch_size=None,
        max_batch_size=None,
        dtype: str = "float32",
        engine=None,
        **unknown,
    ):
        super().__init__()
        unknown.pop("trust_remote_code", None)
        if unknown:
            raise TypeError(
                f"unknown mpg model_args: {', '.join(sorted(unknown))} (see mpg.eval.lm_eval_plugin)"
            )
        self.method = get_method(method)
        roleplaying = profile is not None or personality is not None
        if roleplaying and persona is not None:
            raise ValueError("give either persona=TYPE or profile=...,personality=... (role-play), not both")
        self._dist = _distributed_state(device)  # None in a one-process run
        if self._dist is not None:
            self._rank, self._world_size = self._dist.process_index, self._dist.num_processes
        if engine is None:
            from ..engine import Engine

            dt = getattr(torch, str(dtype), None)
            if not isinstance(dt, torch.dtype):
                raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
            # under accelerate each process owns one device (cuda:LOCAL_RANK, or the CPU with --cpu)
            where = _device(device) if self._dist is None else _process_device(self._dist.device)
            engine = Engine.from_pretrained(base, device=where, dtype=dt)
        self.engine = engine
        if roleplaying:
            self.target = roleplay_target(
                engine, self.method, str(profile or ""), str(personality or ""), experts=experts
            )
        else:
            persona = str(persona or "ENTJ")
            if self.method.kind == "steered":
                if vectors is None:
                    raise ValueError(
                        "method=billy needs vectors=PATH (persona vectors with the type's letters)"
                    )
                from ..extract import PersonaVectors

                register_merged_vector(engine, PersonaVectors.load(vectors), persona)
            self.target = mbti_target(
                engine, self.method, persona, experts=experts, layer=int(layer), alpha=float(alpha)
            )
        self.mode = self.method.likelihood_mode
        self.max_gen_toks = int(max_gen_toks)
        self.seed = int(seed)
        self._device = next(engine.models["base"].parameters()).device
        self._warned_greedy = False

    # ---- scoring ------------------------------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        by_context: dict[str, list[int]] = defaultdict(list)  # requests sharing a context: one prompt
        for i, req in enumerate(requests):
            by_context[req.args[0]].append(i)
        contexts = list(by_context)
        options = [
            [continuation_ids(self.engine, requests[i].args[1]) for i in by_context[c]] for c in contexts
        ]
        bar = _bar(None, len(requests), "mpg loglikelihood", disable_tqdm)
        scored = batched_logliks(self.engine, self.target, contexts, options, self.mode, bar=bar)
        _close(bar)
        out: list[tuple[float, bool] | None] = [None] * len(requests)
        for context, (scores, greedy) in zip(contexts, scored):
            for j, i in enumerate(by_context[context]):
                out[i] = (float(scores[j]), bool(greedy[j]))
                self.cache_hook.add_partial("loglikelihood", requests[i].args, out[i])
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        if not requests:
            return []
        texts = [continuation_ids(self.engine, req.args[0]) for req in requests]
        bar = _bar(None, len(requests), "mpg loglikelihood_rolling", disable_tqdm)
        # every text is the response to the same empty prompt: one context, its head forwarded once
        ((scores, _),) = batched_logliks(self.engine, self.target, [""], [texts], "token", bar=bar)
        _close(bar)
        out = [float(s) for s in scores]
        for req, value in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, value)
        return out

    # ---- generation ---------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for i, req in enumerate(_bar(requests, len(requests), "mpg generate_until", disable_tqdm)):
            context, gen = req.args[0], dict(req.args[1] or {})
            until = gen.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            greedy = not gen.get("do_sample", False) or float(gen.get("temperature", 1.0) or 0.0) == 0.0
            temperature = 0.0 if greedy else float(gen.get("temperature", 1.0))
            if temperature == 0.0 and self.method.sampler == "scr":
                if not self._warned_greedy:
                    log.warning(
                        "mpg: %s has no greedy mode; sampling at temperature 1 instead", self.method.name
                    )
                    self._warned_greedy = True
                temperature = 1.0
            res = self.engine.generate(
                [context],
                target=self.target,
                max_new_tokens=int(gen.get("max_gen_toks", self.max_gen_toks)),
                temperature=temperature,
                top_p=float(gen.get("top_p", 1.0) or 1.0),
                seed=self.seed + i,
                stop=until,
                **generate_kwargs(self.method),
            )
            out.append(res.texts[0])
            self.cache_hook.add_partial("generate_until", req.args, out[-1])
        return out

    def apply_chat_template(self, chat_history, add_generation_prompt=True) -> str:
        raise ValueError(
            "the mpg model applies each policy's own chat template; run without --apply_chat_template"
        )

    def get_model_info(self) -> dict:
        return {
            "mpg_method": self.method.name,
            "mpg_mode": self.mode,
            "mpg_policies": [
                p.label()
                for p in dict.fromkeys(
                    [self.target.anchor, *(x for a in self.target.attributes for x in (a.num, a.den))]
                )
            ],
        }

    # ---- data parallel (lm-eval's evaluator calls these when world_size > 1) --------------------
    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's tensor, concatenated along dim 0 (a 0-d tensor counts as [1])."""
        if self._dist is None:
            return tensor
        from accelerate.utils import gather

        return gather(tensor)

    def gather_object(self, obj, dst: int = 0):
        """[every rank's obj] on rank dst, None on the others."""
        if self._dist is None:
            return [obj]
        parts = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj=obj, object_gather_list=parts, dst=dst)
        return parts

    def barrier(self) -> None:
        if self._dist is not None:
            self._dist.wait_for_everyone()


# ---- batched scoring ---------------------------------------------------------------------------
def batched_logliks(
    engine,
    target,
    prompts: list[str],
    options: list[list[list[int]]],
    mode: str = "token",
    *,
    block: int = BLOCK,
    feed: int = FEED,
    bar=None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """For each prompt, the scores [K_i] (float64) of its options under the target and greedy flags [K_i]:
    what `target_logliks(engine, target, prompts[i], options[i], mode)` gives, computed together.

    One PolicyScorer holds every policy's context head common to all prompts (forwarded once). Then each
    forward takes several prompts at once (about `feed` columns): per prompt its tail, and its options as
    branches after that tail (one forward for all, instead of one per prompt and one per option), with
    at most `block` option tokens' log-probs kept. Options longer than `block` go block by block
    (target_logliks). bar: a tqdm-like progress bar, advanced by each option scored."""
    if mode not in MODES:
        raise ValueError(f"unknown likelihood mode {mode!r}; choose one of {', '.join(MODES)}")
    if len(prompts) != len(options):
        raise ValueError(f"{len(prompts)} prompts but {len(options)} option lists")
    if not prompts:
        return []
    policies = target_policies(target)
    index = {p: i for i, p in enumerate(policies)}
    scorer = PolicyScorer(engine, policies, list(prompts))  # context heads cached once
    pad = pad_token_id(engine.tokenizer)
    scores = [torch.empty(len(o), dtype=torch.float64) for o in options]
    greedy = [torch.empty(len(o), dtype=torch.bool) for o in options]
    units = [(i, piece) for i, opts in enumerate(options) for piece in _pieces([len(o) for o in opts], block)]
    tails = scorer.tail_widths()  # [prompts]
    for batch in _batches(units, options, tails, feed, block):
        opts = [[options[i][k] for k in piece] for i, piece in batch]
        lps = scorer.logprobs_many([i for i, _ in batch], opts)  # [P, k, T, V] per unit
        for (i, piece), o, lp in zip(batch, opts, lps):
            tokens, mask = pad_options(o, pad)  # [k, T] x2
            s, g = option_scores(target, index, lp, tokens, mask, mode)  # [k] x2
            scores[i][piece], greedy[i][piece] = s.double(), g
        if bar is not None:
            bar.update(sum(len(piece) for _, piece in batch))
    for i, opts in enumerate(options):
        for k, o in enumerate(opts):
            if len(o) > block:  # long: target_logliks' block-by-block path (earlier blocks become context)
                s, g = target_logliks(engine, target, prompts[i], [o], mode, block=block)
                scores[i][k], greedy[i][k] = s[0], g[0]
                if bar is not None:
                    bar.update(1)
    return list(zip(scores, greedy))


def _batches(units, options, tails, feed: int, block: int) -> list[list[tuple[int, list[int]]]]:
    """Consecutive units (prompt i, option indices) grouped so that each forward feeds about `feed`
    columns (tails + option tokens; a unit wider than that goes alone) and keeps <= `block` log-probs."""
    out, cur, width, kept = [], [], 0, 0
    for i, piece in units:
        extra = sum(len(options[i][k]) - 1 for k in piece)
        w, n = tails[i] + extra, 1 + extra  # feed columns; kept: the tail's last + every option column
        if cur and (width + w > feed or kept + n > block):
            out.append(cur)
            cur, width, kept = [], 0, 0
        cur.append((i, piece))
        width, kept = width + w, kept + n
    return [*out, cur] if cur else out


def _pieces(lengths: list[int], block: int) -> list[list[int]]:
    """Indices of the options of at most `block` tokens, in order, grouped so that each group's
    count x longest length (its padded [K, T]) stays within `block`."""
    pieces, cur, longest = [], [], 0
    for k, n in enumerate(lengths):
        if n > block:
            continue
        if cur and (len(cur) + 1) * max(longest, n) > block:
            pieces.append(cur)
            cur, longest = [], 0
        cur.append(k)
        longest = max(longest, n)
    return [*pieces, cur] if cur else pieces


def _distributed_state(device: str | None):
    """accelerate's process state when launched with several processes (WORLD_SIZE > 1), else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # gloo on the CPU when asked (--device cpu; ACCELERATE_USE_CPU, which PartialState, unlike Accelerator,
    # does not read itself) or when there is no accelerator (else PartialState would pick no backend at
    # all under `accelerate launch --multi_gpu` on a CPU machine). Ranks wait for each other at lm-eval's
    # barriers while the slowest scores its share: no timeout, as lm-eval's hf model (52 weeks).
    cpu = (
        parse_flag_from_env("ACCELERATE_USE_CPU")
        or str(device or "").startswith("cpu")
        or not _has_accelerator()
    )
    state = PartialState(cpu=cpu, timeout=timedelta(weeks=52))
    if state.num_processes <= 1:
        return None
    log.info(
        "mpg: rank %d of %d (%s, %s)", state.process_index, state.num_processes, state.backend, state.device
    )
    return state


def _has_accelerator() -> bool:
    acc = getattr(torch, "accelerator", None)  # torch >= 2.6
    return bool(acc.is_available()) if acc is not None else torch.cuda.is_available()


def _bar(items, total: int, desc: str, disable: bool):
    """A tqdm bar over items (or, with items None, one to advance by hand; None without tqdm)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, total=total, desc=desc, disable=disable)


def _close(bar) -> None:
    if bar is not None:
        bar.close()
