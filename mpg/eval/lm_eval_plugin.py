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
  generate_until(context, gen_kwargs): engine.generate(..., stop=until, max_new_tokens=max_gen_toks);
    do_sample=False / temperature 0 is greedy decoding of p_1. SCR has no greedy mode: it then samples at
    temperature 1 (seeded).
Do not pass --apply_chat_template: every policy already applies its own chat context.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from .likelihood import continuation_ids, target_logliks
from .methods import (
    generate_kwargs,
    get_method,
    mbti_target,
    register_merged_vector,
    roleplay_target,
)

DEFAULT_METHOD = "fused_mixture"
log = logging.getLogger(__name__)


def _device(device: str | None) -> str:
    """lm-eval passes device=cuda:0 by default; fall back to the CPU where there is no GPU."""
    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        return "cpu"
    return str(device)


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
        if engine is None:
            from ..engine import Engine

            dt = getattr(torch, str(dtype), None)
            if not isinstance(dt, torch.dtype):
                raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
            engine = Engine.from_pretrained(base, device=_device(device), dtype=dt)
        self.engine = engine
        if roleplaying:
            self.target = roleplay_target(
                engine, self.method, str(profile or ""), str(personality or ""), experts=experts
            )
        else:
            persona = str(persona or "ENTJ")
            if self.method.name == "billy":
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
        by_context: dict[str, list[int]] = defaultdict(list)  # requests sharing a context: one batch
        for i, req in enumerate(requests):
            by_context[req.args[0]].append(i)
        out: list[tuple[float, bool] | None] = [None] * len(requests)
        for context, members in _bar(by_context.items(), len(by_context), "mpg loglikelihood", disable_tqdm):
            options = [continuation_ids(self.engine, requests[i].args[1]) for i in members]
            scores, greedy = target_logliks(self.engine, self.target, context, options, self.mode)
            for j, i in enumerate(members):
                out[i] = (float(scores[j]), bool(greedy[j]))
                self.cache_hook.add_partial("loglikelihood", requests[i].args, out[i])
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for req in _bar(requests, len(requests), "mpg loglikelihood_rolling", disable_tqdm):
            ids = continuation_ids(self.engine, req.args[0])
            scores, _ = target_logliks(self.engine, self.target, "", [ids], "token")
            out.append(float(scores[0]))
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, out[-1])
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


def _bar(items, total: int, desc: str, disable: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, total=total, desc=desc, disable=disable)
