"""Persona vectors (Persona Vectors, Chen et al. 2025; BILLY eq. 1), at the same hook point that
`mpg.steering` adds to: the output of each decoder block.

For every persona: the model answers each question under the persona's system prompts and under
neutral ones; a response's activation at block L is the mean of that block's output over the
response tokens; the persona vector at L is the mean over kept persona responses minus the mean over
neutral responses. All blocks are kept, with their norms.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .policies import Policy
from .steering import decoder_layers
from .tokens import pad_token_id

__all__ = [
    "CREATIVE_ROLES",
    "DEFAULT_QUESTIONS",
    "NEUTRAL_PROMPTS",
    "PersonaVectors",
    "base_weights",
    "collect_responses",
    "extract_persona_vectors",
    "mbti_personas",
    "read_lines_or_json",
    "response_activation",
    "vectors_from_responses",
]


def base_weights(model):
    """Context in which a PEFT model acts as its bare base, its LoRA adapters off (persona vectors are the
    base's); a plain model is its own base (a no-op context)."""
    from contextlib import nullcontext

    return model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()


@dataclass
class PersonaVectors:
    vectors: dict[str, torch.Tensor]  # persona -> [n_layers, H]
    meta: dict = field(default_factory=dict)

    def norms(self) -> dict[str, list[float]]:
        return {k: v.norm(dim=-1).tolist() for k, v in self.vectors.items()}

    def merge(self, names: list[str], weights: list[float] | None = None) -> torch.Tensor:
        """Weighted average of raw vectors (BILLY: plain average). returns [n_layers, H]."""
        unknown = [n for n in names if n not in self.vectors]
        if unknown:
            raise ValueError(
                f"unknown persona vector(s) {', '.join(unknown)}; have {', '.join(self.vectors)}"
            )
        w = torch.tensor(weights if weights is not None else [1.0] * len(names), dtype=torch.float32)
        if w.numel() != len(names) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(
                f"merge weights {weights!r} must be one finite non-negative number per vector, not all 0"
            )
        stacked = torch.stack([self.vectors[n] for n in names])  # [m, n_layers, H]
        return (w[:, None, None] * stacked).sum(0) / w.sum()

    def save(self, path: str | Path) -> None:
        """`path`.safetensors + `path`.json (model, layers, norms, prompts, ...)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.vectors.items()}, str(path.with_suffix(".safetensors")))
        path.with_suffix(".json").write_text(json.dumps({**self.meta, "norms": self.norms()}, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "PersonaVectors":
        from safetensors.torch import load_file

        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").exists() else {}
        return cls(load_file(str(path.with_suffix(".safetensors"))), meta)


@torch.inference_mode()
def response_activation(model, context: list[int], response: list[int]) -> torch.Tensor:
    """Mean output of every decoder block over the response tokens: [n_layers, H]."""
    layers = decoder_layers(model)
    outs: list[torch.Tensor] = []

    def grab(module, args, output):
        outs.append((output[0] if isinstance(output, tuple) else output)[0, len(context) :].float().mean(0))

    handles = [layer.register_forward_hook(grab) for layer in layers]
    try:
        with base_weights(model):
            model(input_ids=torch.tensor([context + response], device=next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return torch.stack(outs).cpu()  # [n_layers, H], on the CPU whatever the model's device (merge, save)


def collect_responses(
    engine,
    personas: dict[str, list[str]],
    neutral_prompts: list[str],
    questions: list[str],
    *,
    samples: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    seed: int = 0,
    response_filter: Callable[[str, str, str], bool] | None = None,
    progress: bool = True,
) -> list[tuple[str | None, list[int], list[int]]]:
    """Answer every question under every persona prompt and every neutral prompt (persona None).

    returns (persona, context ids, response ids) for each kept response; `response_filter(persona,
    question, text)` may drop weak persona responses (BILLY uses an LLM judge there)."""
    if not personas or not neutral_prompts or not questions:
        raise ValueError("extraction needs at least one persona, one neutral prompt and one question")
    model, tok = engine.models["base"], engine.tokenizer
    device = next(model.parameters()).device
    jobs = [(None, p) for p in neutral_prompts] + [(name, p) for name, ps in personas.items() for p in ps]
    total, done, kept = len(jobs) * len(questions) * samples, 0, []
    gen = torch.Generator().manual_seed(seed)
    for name, system in jobs:
        for q in questions:
            ctx = engine.context_ids(Policy(system=system), q)
            for _ in range(samples):
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                with torch.inference_mode(), base_weights(model):
                    out = model.generate(
                        torch.tensor([ctx], device=device),
                        max_new_tokens=max_new_tokens,
                        do_sample=temperature > 0,
                        temperature=temperature if temperature > 0 else None,
                        pad_token_id=pad_token_id(tok),
                    )
                resp = out[0, len(ctx) :].tolist()
                done += 1
                if progress:
                    print(f"\rmpg: answering {done}/{total}", end="", file=sys.stderr)
                if resp and (
                    name is None
                    or response_filter is None
                    or response_filter(name, q, tok.decode(resp, skip_special_tokens=True))
                ):
                    kept.append((name, ctx, resp))
    if progress:
        print(file=sys.stderr)
    return kept


def vectors_from_responses(model, responses, personas: list[str]) -> tuple[dict[str, torch.Tensor], dict]:
    """Persona mean minus neutral mean of per-response activations: ({persona: [n_layers, H]}, counts)."""
    sums: dict[str | None, torch.Tensor] = {}
    counts: dict[str | None, int] = {}
    for name, ctx, resp in responses:
        sums[name] = sums.get(name, 0) + response_activation(model, ctx, resp)  # [n_layers, H]
        counts[name] = counts.get(name, 0) + 1
    if None not in counts:
        raise ValueError("no neutral response was produced; cannot form persona vectors")
    missing = [p for p in personas if p not in counts]
    if missing:
        raise ValueError(f"every response of persona(s) {', '.join(missing)} was filtered out")
    neutral = sums[None] / counts[None]
    return {p: sums[p] / counts[p] - neutral for p in personas}, {str(k): v for k, v in counts.items()}


def extract_persona_vectors(
    engine,
    personas: dict[str, list[str]],
    neutral_prompts: list[str],
    questions: list[str],
    *,
    samples: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    seed: int = 0,
    response_filter: Callable[[str, str, str], bool] | None = None,
    progress: bool = True,
) -> PersonaVectors:
    """personas: name -> persona system prompts. See `collect_responses` and `vectors_from_responses`."""
    responses = collect_responses(
        engine,
        personas,
        neutral_prompts,
        questions,
        samples=samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        response_filter=response_filter,
        progress=progress,
    )
    model = engine.models["base"]
    vectors, counts = vectors_from_responses(model, responses, list(personas))
    first = next(iter(vectors.values()))
    meta = {
        "model": str(getattr(model.config, "_name_or_path", "")),
        "n_layers": first.shape[0],
        "hidden_size": first.shape[1],
        "hook": "output of each decoder block (mpg.steering)",
        "personas": personas,
        "neutral_prompts": neutral_prompts,
        "questions": questions,
        "samples": samples,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "seed": seed,
        "kept_responses": counts,
    }
    return PersonaVectors(vectors, meta)


# ---- built-in persona sets --------------------------------------------------------------------
NEUTRAL_PROMPTS = [
    "You are a helpful assistant. Please respond naturally and appropriately.",
    "You are an assistant. Answer the question.",
]

CREATIVE_ROLES = {  # BILLY's three creative roles, in our own words (the first is BILLY's example)
    "creative_professional": [
        "You are a highly creative professional. Approach problems with innovative thinking "
        "and original solutions.",
        "You are an inventive designer who always looks for unexpected, original ideas.",
    ],
    "environmentalist": [
        "You are a passionate environmentalist. You see every question through nature, "
        "sustainability and the future of the planet.",
        "You are an ecologist who cares deeply about protecting the environment.",
    ],
    "futurist": [
        "You are a futurist. You imagine how technology and society will look decades from now.",
        "You are a visionary who thinks about long-term trends and tomorrow's possibilities.",
    ],
}

DEFAULT_QUESTIONS = [
    "What would you do with a free afternoon?",
    "How should a city plan its next ten years?",
    "What are some uses for an old bicycle?",
    "Describe your ideal workplace.",
    "How would you solve a disagreement in a team?",
]


def mbti_personas(data_dir: str | Path) -> dict[str, list[str]]:
    """The 8 MBTI letters' trait descriptions from `<data_dir>/mbti/personas.json` (one prompt each)."""
    path = Path(data_dir) / "mbti" / "personas.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass --data pointing at the shared data folder")
    traits = json.loads(path.read_text())["traits"]
    return {letter: [text] for letter, text in traits.items()}


def read_lines_or_json(path: str | Path):
    """A .json file (any JSON value) or a text file with one item per non-empty line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]
