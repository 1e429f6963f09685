"""Judge-free text figures for a method's answers: lexical diversity and fluency, with 95% intervals.

- distinct-n (Li et al. 2016): unique n-grams / total n-grams of lower-cased words, over all of a
  method's answers together (corpus level: repetition *across* answers counts) and per answer
  (mean with a 95% CI: repetition *within* an answer). A persona that collapses every answer onto
  the same phrases scores low on the first even when each answer alone looks varied.
- perplexity under the plain base model (`fluency_ppl`: LoRA adapters off, no steering), each answer after
  the same context for every method, so methods differ only in their tokens. Token-weighted over
  all answers, with a 95% CI from the per-answer log-perplexities (a geometric-mean interval).
Intervals come from `mpg.stats` (`bounded_mean_ci` for the per-answer distinct-n, `mean_ci` for the
log-perplexities).
"""

from __future__ import annotations

import math

import torch

from ..extract import base_weights
from ..policies import Policy
from ..stats import bounded_mean_ci, mean_ci
from .creativity import words

__all__ = [
    "answer_ppls",
    "distinct_n",
    "distinct_per_answer",
    "distinct_summary",
    "fluency_ppl",
    "ppl_summary",
]


def _ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    w = words(text)
    return [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]


def distinct_n(texts: list[str], n: int) -> float:
    """Unique / total n-grams over all texts together; nan when they hold no n-gram."""
    if n < 1:
        raise ValueError(f"distinct-n needs n >= 1, got {n}")
    grams = [g for t in texts for g in _ngrams(t, n)]
    return len(set(grams)) / len(grams) if grams else math.nan


def distinct_per_answer(texts: list[str], n: int) -> dict:
    """Mean [95% CI] over answers of each answer's own distinct-n (answers with no n-gram left out)."""
    return bounded_mean_ci([distinct_n([t], n) for t in texts])


def distinct_summary(texts: list[str], ns: tuple[int, ...] = (1, 2)) -> dict:
    """{distinct_1, distinct_1_per_answer, distinct_2, ...} for one method's answers."""
    out = {}
    for n in ns:
        out[f"distinct_{n}"] = distinct_n(texts, n)
        out[f"distinct_{n}_per_answer"] = distinct_per_answer(texts, n)
    return out


@torch.inference_mode()
def fluency_ppl(
    engine, texts_or_ids: list[str] | list[list[int]], contexts: list[str] | list[list[int]]
) -> float:
    """Token-weighted perplexity of the responses under the unsteered, adapter-free base model.

    texts_or_ids: response texts (tokenised without special tokens) or response token ids;
    contexts: the context token ids each response followed, or prompts (plain `Policy()` context)."""
    if len(texts_or_ids) != len(contexts):
        raise ValueError(f"{len(texts_or_ids)} responses but {len(contexts)} contexts")
    model = engine.models["base"]
    tok = engine.tokenizer
    device = next(model.parameters()).device
    nll, n = 0.0, 0
    for resp, ctx in zip(texts_or_ids, contexts):
        resp = tok(resp, add_special_tokens=False).input_ids if isinstance(resp, str) else list(resp)
        ctx = engine.context_ids(Policy(), ctx) if isinstance(ctx, str) else list(ctx)
        if not resp:
            continue
        if not ctx:
            raise ValueError("fluency_ppl needs a non-empty context to score the first response token")
        with base_weights(model):
            logits = model(input_ids=torch.tensor([ctx + resp], device=device)).logits[0]  # [T, V]
        logp = torch.log_softmax(logits[len(ctx) - 1 : -1].float(), dim=-1)  # [len(resp), V]
        nll -= float(logp.gather(1, torch.tensor(resp, device=device)[:, None]).sum())
        n += len(resp)
    return math.exp(nll / n) if n else float("nan")


def answer_ppls(
    engine,
    token_ids: list[list[int]],
    contexts: list[str] | list[list[int]],
    eos: set[int] | frozenset[int] = frozenset(),
) -> list[tuple[float, int]]:
    """(perplexity, scored tokens) of each answer under the plain base model; a trailing eos token is
    left out (it is where generation stopped, not text), an empty answer gives (nan, 0)."""
    if len(token_ids) != len(contexts):
        raise ValueError(f"{len(token_ids)} answers but {len(contexts)} contexts")
    out = []
    for ids, ctx in zip(token_ids, contexts):
        ids = list(ids)
        while ids and ids[-1] in eos:
            ids = ids[:-1]
        out.append((fluency_ppl(engine, [ids], [ctx]), len(ids)) if ids else (math.nan, 0))
    return out


def ppl_summary(per_answer: list[tuple[float, int]]) -> dict:
    """{ppl (token-weighted), mean, lo, hi, n}: lo/hi exponentiate the 95% CI of mean log-perplexity."""
    scored = [(p, n) for p, n in per_answer if n > 0 and math.isfinite(p)]
    if not scored:
        return {"ppl": None, "mean": None, "lo": None, "hi": None, "n": 0}
    tokens = sum(n for _, n in scored)
    weighted = math.exp(sum(n * math.log(p) for p, n in scored) / tokens)
    ci = mean_ci([math.log(p) for p, _ in scored])
    return {
        "ppl": weighted,
        "mean": math.exp(ci["mean"]),
        "lo": math.exp(ci["lo"]),
        "hi": math.exp(ci["hi"]),
        "n": ci["n"],
    }
