"""Multi-policy scoring of one shared response, with incremental KV caches that roll back.

Every policy scores the same response y after its own context. A `PolicyGroup` holds all the policies
that run on one set of weights (the base model and its LoRA adapters, or one separate model) as rows of
ONE batch: contexts are left-padded, so after the context every row advances by the same response
tokens and a rejected draft is undone for all rows with one `crop`.

Invariant: a group's cache holds context[:-1] + s[:consumed], where s = [context[-1]] + y. Feeding
s[consumed:] (at least one token, because consumed <= len(y)) yields the distribution of the next
token, so "what to feed" and "what to roll back" follow from `consumed` alone.
"""
from __future__ import annotations

import copy

import torch
from transformers import DynamicCache

from .steering import steered


class PolicyGroup:
    """Rows = policies sharing one model. adapters[r] is a PEFT adapter name or None (bare weights)."""

    def __init__(self, model, adapters: list[str | None], contexts: list[list[int]], pad_id: int,
                 is_peft: bool, steer_deltas: dict | None = None):
        if any(len(c) == 0 for c in contexts):
            raise ValueError("a policy context tokenised to nothing")
        self.model = model
        self.adapters = list(adapters)
        self.is_peft = is_peft
        self.device = next(model.parameters()).device
        self.steer_deltas = steer_deltas or {}  # {layer: [R, H]} added to steered rows only
        R = len(contexts)
        self.pad_len = max(len(c) for c in contexts) - 1
        prefix = torch.full((R, self.pad_len), pad_id, dtype=torch.long)        # [R, P]
        self.prefix_mask = torch.zeros((R, self.pad_len), dtype=torch.long)     # [R, P]
        for r, c in enumerate(contexts):
            n = len(c) - 1
            if n:
                prefix[r, self.pad_len - n:] = torch.tensor(c[:-1])
                self.prefix_mask[r, self.pad_len - n:] = 1
        self.prefix_mask = self.prefix_mask.to(self.device)
        self.last_context_token = torch.tensor([c[-1] for c in contexts], device=self.device)  # [R]
        self.start_pos = torch.tensor([len(c) - 1 for c in contexts], device=self.device)      # [R]
        self.cache = DynamicCache()
        self.consumed = 0
        self.forward_passes = 0
        if self.pad_len:
            pos = (self.prefix_mask.cumsum(-1) - 1).clamp_min(0)  # [R, P]
            self._forward(prefix.to(self.device), self.prefix_mask, pos)

    @property
    def rows(self) -> int:
        return len(self.adapters)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        kwargs = {}
        if self.is_peft:
            kwargs["adapter_names"] = [a if a is not None else "__base__" for a in self.adapters]
        with steered(self.model, self.steer_deltas):
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=self.cache,
                             use_cache=True, **kwargs)
        self.cache = out.past_key_values
        self.forward_passes += 1
        return out.logits

    def pending(self, y: list[int]) -> torch.Tensor:
        """s[consumed:] for every row: [R, m], m = len(y) + 1 - consumed >= 1."""
        assert self.consumed <= len(y), "cache is ahead of the response; roll back first"
        tail = torch.tensor(y[max(self.consumed - 1, 0):], dtype=torch.long, device=self.device)
        tail = tail.unsqueeze(0).expand(self.rows, -1)                           # [R, len]
        if self.consumed == 0:
            return torch.cat([self.last_context_token.unsqueeze(1), tail], 1)    # [R, len(y)+1]
        return tail

    def feed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append tokens [R, m] to every row; returns next-token log-probs [R, m, V] (float32)."""
        R, m = tokens.shape
        pos = self.start_pos.unsqueeze(1) + self.consumed + torch.arange(m, device=self.device)  # [R, m]
        mask = torch.cat([self.prefix_mask,
                          torch.ones((R, self.consumed + m), dtype=torch.long, device=self.device)], 1)
        logits = self._forward(tokens.to(self.device), mask, pos)               # [R, m, V]
        self.consumed += m
        return torch.log_softmax(logits.float(), dim=-1)

    def rollback(self, response_len: int) -> None:
        """Forget everything past the first `response_len` response tokens (keeps the invariant)."""
        keep = min(self.consumed, response_len)
        if keep < self.consumed:
            self.cache.crop(keep - self.consumed)  # transformers 5: a negative count of tokens to drop
            self.consumed = keep

    def fork(self, n: int) -> "PolicyGroup":
        """A copy with every row repeated n times (row r, copy j -> r * n + j); this group is untouched."""
        other = copy.copy(self)
        other.cache = copy.deepcopy(self.cache)
        other.cache.batch_repeat_interleave(n)
        other.adapters = [a for a in self.adapters for _ in range(n)]
        other.prefix_mask = self.prefix_mask.repeat_interleave(n, 0)
        other.last_context_token = self.last_context_token.repeat_interleave(n, 0)
        other.start_pos = self.start_pos.repeat_interleave(n, 0)
        other.steer_deltas = {L: d.repeat_interleave(n, 0) for L, d in self.steer_deltas.items()}
        other.forward_passes = 0
        return other

    def adopt(self, fork: "PolicyGroup", n: int, j: int) -> None:
        """Take over copy j of an n-way fork of this group (its cache already holds candidate j)."""
        rows = torch.arange(self.rows, device=self.device) * n + j
        fork.cache.batch_select_indices(rows)
        self.cache, self.consumed = fork.cache, fork.consumed


class MultiPolicyScorer:
    """Scores a shared response under a list of unique policies, one batched forward per model.

    policies[i] -> (group, row). `score` returns log-probs for all policies in list order.
    """

    def __init__(self, groups: list[PolicyGroup], index: list[tuple[int, int]]):
        self.groups = groups
        self.index = index  # policy i lives in groups[index[i][0]] at row index[i][1]

    def score(self, y: list[int], chunk: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probs [P, m+1, V] of every policy predicting chunk[0..m-1] and the token after it.

        y: the accepted response; chunk: [m] drafted tokens (or None for m = 0).
        """
        m = 0 if chunk is None else chunk.numel()
        outs = []
        for g in self.groups:
            feed = g.pending(y)                                                  # [R, m0]
            if m:
                feed = torch.cat([feed, chunk.to(g.device).unsqueeze(0).expand(g.rows, -1)], 1)
            outs.append(g.feed(feed)[:, -(m + 1):])                              # [R, m+1, V]
        return torch.stack([outs[gi][r].to(outs[0].device) for gi, r in self.index])  # [P, m+1, V]

    def score_many(self, y: list[int], chunks: torch.Tensor) -> tuple[torch.Tensor, list[PolicyGroup]]:
        """Score n alternative chunks [n, m] at once in forked caches: log-probs [P, n, m+1, V] and the
        forks (one per group), so that the caller can `adopt` the copy it keeps."""
        n, m = chunks.shape
        outs, forks = [], []
        for g in self.groups:
            f = g.fork(n)
            feed = torch.cat([f.pending(y), chunks.to(g.device).repeat(g.rows, 1)], 1)  # [R*n, m0+m]
            outs.append(f.feed(feed)[:, -(m + 1):].reshape(g.rows, n, m + 1, -1))     # [R, n, m+1, V]
            g.forward_passes += f.forward_passes
            forks.append(f)
        return torch.stack([outs[gi][r].to(outs[0].device) for gi, r in self.index]), forks

    def adopt(self, forks: list[PolicyGroup], n: int, j: int) -> None:
        for g, f in zip(self.groups, forks):
            g.adopt(f, n, j)

    def rollback(self, response_len: int) -> None:
        for g in self.groups:
            g.rollback(response_len)
