"""The OpenAI request and response shapes, and mpg's extra body fields, validated into one `Job` spec.

Everything a client can get wrong is checked here, before any work is queued, and raises
`RequestError` (HTTP 400 with an OpenAI-style error object naming the field). The engine's own
checks (GenerateConfig, the target, policies, personas) are reused: their ValueErrors become 400s.

A conversation: every policy renders the whole conversation itself (`mpg.chat.Conversation`): its own
system prompt, then the client's earlier turns as turns (a client's system or developer messages as
system turns), then its template around the last user message.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, replace

from ..chat import Conversation, Prompt, prompt_text
from ..generation import GenerateConfig
from ..personas import AXES, persona
from ..policies import AGGREGATORS, Policy, Target
from ..proposals import merge_coefficients, prompt_proposal
from ..samplers import SequenceSettings
from ..steering import Steer
from ..tokens import eos_token_ids

__all__ = ["JobSpec", "Presets", "RequestError", "parse_request"]

# Fields clients send that change nothing here (or only when set to their neutral value).
IGNORED = {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "stream_options"}
NEUTRAL = {
    "n": (None, 1),
    "best_of": (None, 1),
    "echo": (None, False),
    "suffix": (None, ""),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "response_format": (None, {"type": "text"}),
}
UNSUPPORTED = {"logprobs", "top_logprobs", "logit_bias", "tools", "tool_choice", "functions", "function_call"}
OPENAI = {"model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p"}
OPENAI |= {"seed", "stop", "stream"}
MPG = {"persona", "profile", "personality", "traits", "aggregator", "lam", "sampler", "chunk_size"}
MPG |= {"proposal", "steer", "ignore_eos", "composition"}


SEED_LIMIT = 2**44  # seeds are integers in [0, SEED_LIMIT]


class RequestError(ValueError):
    """A bad request: HTTP `status` with an OpenAI-style error object naming `param`."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param, self.status = param, status

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status == 400 else "server_error"
        return {"error": {"message": str(self), "type": kind, "param": self.param, "code": None}}


@dataclass
class JobSpec:
    """One validated request: what to generate, for which choices, and how to answer."""

    kind: str  # "chat" or "completion"
    model: str
    prompts: list[Prompt]  # one per choice
    target: Target
    settings: SequenceSettings
    max_tokens: int
    seed: int
    stop: list[str]
    stream: bool
    include_usage: bool
    prompt_tokens: int  # tokens of the anchor's context, over all choices (the usage figure)
    persona: str  # what the persona resolved to, for the response


class Presets:
    """Model names a request may give: "mpg" (the server's default persona), "mpg-base" (the base
    alone) and "mpg-<type>" for each of the 16 MBTI types."""

    def __init__(self, default_persona: str | None):
        self.default = default_persona
        types = [a + b + c + d for a in AXES[0] for b in AXES[1] for c in AXES[2] for d in AXES[3]]
        self.names = {"mpg": default_persona, "mpg-base": None, **{f"mpg-{t.lower()}": t for t in types}}

    def persona_of(self, model) -> str | None:
        if model is None:
            return self.default
        if not isinstance(model, str) or model not in self.names:
            raise RequestError(
                f"unknown model {model!r}; this server has mpg, mpg-base and mpg-<type> (e.g. mpg-entj)",
                "model",
            )
        return self.names[model]


def _number(body, name, lo=None, hi=None, integer=False, default=None):
    v = body.get(name, default)
    if v is None:
        return default
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok or (not integer and not math.isfinite(v)):
        raise RequestError(f"{name} must be {'an integer' if integer else 'a number'}, got {v!r}", name)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise RequestError(f"{name} must be between {lo} and {hi}, got {v!r}", name)
    return v


def _text(content, where: str) -> str:
    """A message's content: a string, or a list of {"type": "text", "text": ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise RequestError(f"{where}: content must be a string or a list of text parts", "messages")


def conversation_prompt(messages) -> Conversation:
    """The conversation the policies render: the client's earlier turns (system and developer messages
    as system turns), then its last message, which must be the user's."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list (the conversation is empty)", "messages")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant"):
            raise RequestError(
                f"messages[{i}] must be an object with role system, developer, user or assistant", "messages"
            )
        role = "system" if m["role"] == "developer" else m["role"]
        turns.append((role, _text(m.get("content"), f"messages[{i}]")))
    if turns[-1][0] != "user":
        raise RequestError("the last message must be the user's (mpg answers it)", "messages")
    return Conversation(tuple(turns[:-1]), turns[-1][1])


def _traits(value) -> list[tuple[str, float]]:
    """traits: ["text", "text::weight", ["text", weight], {"text": ..., "weight": ...}, ...]."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise RequestError("traits must be a list of texts or [text, weight] pairs", "traits")
    out = []
    for t in value:
        if isinstance(t, str):
            body, sep, w = t.rpartition("::")
            t = (body, w) if sep else (t, 1.0)
        elif isinstance(t, dict):
            t = (t.get("text"), t.get("weight", 1.0))
        if not (isinstance(t, (list, tuple)) and len(t) == 2 and isinstance(t[0], str)):
            raise RequestError(f"trait {t!r} is not a text or a [text, weight] pair", "traits")
        try:
            w = float(t[1])
        except (TypeError, ValueError):
            raise RequestError(f"trait weight {t[1]!r} is not a number", "traits") from None
        out.append((t[0], w))
    return out


def _steer(value) -> tuple[Steer, ...] | None:
    """steer: {"vector": name, "layer": int, "alpha": float} or a list of them."""
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    out = []
    for s in items:
        if not isinstance(s, dict) or not isinstance(s.get("vector"), str):
            raise RequestError(
                'steer must be {"vector": name, "layer": int, "alpha": number} or a list', "steer"
            )
        layer, alpha = _number(s, "layer", 0, integer=True), _number(s, "alpha", default=1.0)
        if layer is None:
            raise RequestError("steer needs a layer (the decoder block, 0-based)", "steer")
        out.append(Steer(s["vector"], layer, float(alpha)))
    return tuple(out)


def build_target(engine, body: dict, presets: Presets, experts) -> tuple[Target, bool, str]:
    """(target, whether it needs a user prompt, description) from the model preset and mpg's fields."""
    mbti = presets.persona_of(body.get("model"))
    for name in ("persona", "profile", "personality"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise RequestError(f"{name} must be a string", name)
    if body.get("persona") is not None:
        mbti = body["persona"]
    roleplaying = body.get("profile") is not None or body.get("personality") is not None
    if roleplaying and body.get("persona") is None:
        mbti = None  # a role-play request carries its own persona; the preset's type is not added to it
    traits = _traits(body.get("traits"))
    steer = _steer(body.get("steer"))
    aggregator = body.get("aggregator")  # None: the default composition's (mpg.personas.persona)
    if aggregator is not None and aggregator not in AGGREGATORS:
        raise RequestError(
            f"aggregator must be one of {', '.join(AGGREGATORS)}, got {aggregator!r}", "aggregator"
        )
    lam = _number(body, "lam", 0)
    composition = body.get("composition")  # None: the default composition (mpg.personas.persona)
    if composition is not None and not isinstance(composition, str):
        raise RequestError(
            "composition must be a string such as 'product,lam=1,plausibility=0.1'", "composition"
        )
    proposal = body.get("proposal", "anchor")
    if proposal not in ("anchor", "prompt", "merged", "head", None):
        raise RequestError(
            f"proposal must be 'anchor', 'prompt', 'merged' or 'head', got {proposal!r}", "proposal"
        )
    if not mbti and not roleplaying and not traits:  # the base alone (mpg-base), maybe steered
        policy = Policy(steering=steer)  # checked with the others in parse_request
        return Target.single(policy), True, "base" + (" (steered)" if steer else "")
    try:
        p = persona(
            engine,
            mbti or None,
            profile=body.get("profile"),
            personality=body.get("personality"),
            traits=traits,
            experts=experts,
            composition=composition,
        )
        anchor = replace(p.anchor, steering=steer) if steer else p.anchor
        # the persona's own composition where the request names no aggregator / lam (Persona.target)
        target = replace(
            p.target(aggregator=aggregator, lam=None if lam is None else float(lam)), anchor=anchor
        )
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise RequestError(str(e), "persona") from None
    try:
        if proposal == "prompt":
            target = replace(target, proposal=prompt_proposal(target))
        elif proposal == "merged":
            merge_coefficients(target)  # a merge that cannot be built is the request's error, now
            # the adapter itself is built by the scheduler's worker, between steps (a bounded cache)
            target = replace(target, proposal="merged")
        elif proposal == "head":  # the draft head, or the anchor with a note where it cannot draft
            target = replace(target, proposal="head")
    except ValueError as e:
        raise RequestError(str(e), "proposal") from None
    return target, p.needs_prompt, p.describe()


def parse_request(
    engine, body, kind: str, presets: Presets, experts, max_tokens_limit: int, max_choices: int
) -> JobSpec:
    """Validate a /v1/chat/completions (kind "chat") or /v1/completions ("completion") body."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    unknown = sorted(set(body) - OPENAI - MPG - IGNORED - set(NEUTRAL) - UNSUPPORTED)
    if unknown:
        raise RequestError(f"unknown field(s): {', '.join(unknown)}", unknown[0])
    for name, neutral in NEUTRAL.items():
        if body.get(name) not in neutral:
            raise RequestError(f"{name}={body[name]!r} is not supported by mpg (only {neutral[-1]!r})", name)
    for name in sorted(UNSUPPORTED):
        if body.get(name) not in (None, False, [], {}):
            raise RequestError(f"{name} is not supported by mpg", name)
    if kind == "chat":
        prompts = [conversation_prompt(body.get("messages"))]
    else:
        raw = body.get("prompt")
        prompts = [raw] if isinstance(raw, str) else raw
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise RequestError("prompt must be a string or a non-empty list of strings", "prompt")
        if len(prompts) > max_choices:
            raise RequestError(
                f"{len(prompts)} prompts exceed this server's batch of {max_choices}", "prompt"
            )
    target, needs_prompt, described = build_target(engine, body, presets, experts)
    if needs_prompt and not all(prompt_text(p).strip() for p in prompts):
        raise RequestError(
            "the prompt (the last user message) is empty", "messages" if kind == "chat" else "prompt"
        )
    drafts = [] if isinstance(target.proposal, str) else [target.draft_policy]  # a named one: built later
    for p in dict.fromkeys([*target.policies(), *drafts]):
        try:
            engine.registry.check_policy(p)
        except ValueError as e:
            raise RequestError(str(e), "steer" if p.steering else "persona") from None
    field_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(body, field_name, 1, integer=True, default=min(128, max_tokens_limit))
    if max_tokens > max_tokens_limit:
        raise RequestError(
            f"{field_name}={max_tokens} exceeds this server's limit of {max_tokens_limit} tokens", field_name
        )
    # a choice's stream is seed * 1_000_003 + choice (mpg.samplers.prompt_rng): kept inside torch's 64 bits
    seed = _number(body, "seed", 0, SEED_LIMIT, integer=True)
    seed = secrets.randbelow(2**31) if seed is None else seed
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("stream must be true or false", "stream")
    opts = body.get("stream_options") or {}
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise RequestError("ignore_eos must be true or false", "ignore_eos")
    knobs = {
        k: body[k]
        for k in ("temperature", "top_p", "stop", "sampler", "chunk_size")
        if body.get(k) is not None
    }
    _number(body, "chunk_size", 1, 64, integer=True)  # bounded work per round
    try:
        cfg = GenerateConfig.from_kwargs(max_new_tokens=max_tokens, seed=seed, **knobs)
    except (TypeError, ValueError) as e:
        raise RequestError(str(e), next((k for k in knobs if k in str(e)), None)) from None
    if len(cfg.stop) > 16 or not all(cfg.stop):
        raise RequestError("stop takes at most 16 non-empty strings", "stop")
    contexts = [len(engine.context_ids(p, q)) for p in target.policies() for q in prompts]
    limit = getattr(engine.models["base"].config, "max_position_embeddings", None)
    if limit and max(contexts) + max_tokens > limit:
        raise RequestError(
            f"the longest context ({max(contexts)} tokens) plus {field_name}={max_tokens} exceeds the model's "
            f"{limit} positions",
            field_name,
        )
    eos = frozenset() if ignore_eos else eos_token_ids(engine.models["base"], engine.tokenizer, None)
    settings = SequenceSettings(
        cfg.sampler, float(cfg.temperature), float(cfg.top_p), cfg.sampler_config, eos
    )
    return JobSpec(
        kind,
        body.get("model") or "mpg",
        prompts,
        target,
        settings,
        max_tokens,
        seed,
        cfg.stop,
        stream,
        bool(isinstance(opts, dict) and opts.get("include_usage")),
        sum(len(engine.context_ids(target.anchor, q)) for q in prompts),
        described,
    )
