"""The bookkeeping of a `PolicyGroup`'s KV cache: which columns each row owns, and how far each row is.

One object holds every per-row and per-column fact the group keeps, so that the operations that touch
all of them (feeding, committing a round, dropping rows, joining two groups, compacting) are methods
here and cannot leave one of them behind.

Invariant per row i (sequence seq[i], response y, s = [last_context_token[i]] + y):
    the row's valid columns, in column order, hold context[:-1] + s[:consumed[i]]; consumed[i] <= len(y);
    the token at position p of that text sits at rotary position p (start[i] = len(context) - 1 is the
    position of s[0]).
Between rounds every column is shared (branch 0). During a round, columns of branch j >= 1 hold the
first `branch_len` tokens of candidate chunk j, visible only to that branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["CacheLayout"]


@dataclass
class CacheLayout:
    valid: torch.Tensor  # [N, C] bool: the row owns the column
    branch: torch.Tensor  # [C] long: 0 shared, j >= 1 candidate branch j
    seq: torch.Tensor  # [N] long: the sequence each row scores
    start: torch.Tensor  # [N] long: the position of s[0] (the context's last token)
    consumed: torch.Tensor  # [N] long: tokens of s already in the cache
    last_context_token: torch.Tensor  # [N] long
    branch_len: int = 0  # tokens fed so far into the open branches (the same for every branch)

    @classmethod
    def empty(cls, contexts: list[list[int]], seq: list[int]) -> CacheLayout:
        N = len(contexts)
        return cls(
            valid=torch.zeros(N, 0, dtype=torch.bool),
            branch=torch.zeros(0, dtype=torch.long),
            seq=torch.tensor(seq, dtype=torch.long),
            start=torch.tensor([len(c) - 1 for c in contexts]),
            consumed=torch.zeros(N, dtype=torch.long),
            last_context_token=torch.tensor([c[-1] for c in contexts]),
        )

    @property
    def rows(self) -> int:
        return self.valid.shape[0]

    @property
    def columns(self) -> int:
        return self.valid.shape[1]

    # ---- feeding ----------------------------------------------------------------------------------
    def pending(self, ys: list[list[int]]) -> list[list[int]]:
        """Per row, s[consumed:] -- the tokens its cache still lacks (at least one)."""
        out = []
        for i in range(self.rows):
            y, c = ys[int(self.seq[i])], int(self.consumed[i])
            assert c <= len(y), "cache is ahead of the response; commit first"
            out.append(y[c - 1 :] if c else [int(self.last_context_token[i])] + y)
        return out

    def attention(self, feed_valid: torch.Tensor, feed_branch: torch.Tensor) -> torch.Tensor:
        """Which keys each fed query sees: [N, W, C+W]. feed_valid: [N, W]; feed_branch: [W].

        Query w sees key k iff k is valid for the row, k is not after w, and k is shared or in w's branch."""
        valid = torch.cat([self.valid, feed_valid], 1)  # [N, C+W]
        branch = torch.cat([self.branch, feed_branch])  # [C+W]
        C, W = self.columns, feed_branch.numel()
        causal = torch.ones(W, C + W, dtype=torch.bool).tril(C)  # [W, C+W]
        same = (branch.unsqueeze(0) == 0) | (branch.unsqueeze(0) == feed_branch.unsqueeze(1))  # [W, C+W]
        return valid.unsqueeze(1) & (causal & same).unsqueeze(0)

    def appended(self, feed_valid: torch.Tensor, feed_branch: torch.Tensor) -> None:
        """Record a feed's columns (after the forward that wrote them)."""
        self.valid = torch.cat([self.valid, feed_valid], 1)  # [N, C+W]
        self.branch = torch.cat([self.branch, feed_branch])  # [C+W]

    def feed_columns(
        self, pending: list[list[int]], n: int, T: int, pad_id: int, branches: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ids [N, W], valid [N, W], positions [N, W] and branch [W] of a feed: each row's pending
        tokens left-padded to M columns, then n branch chunks of T tokens (branches [N, n, T]).
        Marks the pending tokens consumed and opens the branches."""
        M = max(len(p) for p in pending)
        N, W = self.rows, M + n * T
        ids = torch.full((N, W), pad_id, dtype=torch.long)  # [N, W]
        fvalid = torch.zeros(N, W, dtype=torch.bool)  # [N, W]
        fpos = torch.zeros(N, W, dtype=torch.long)  # [N, W]
        m = torch.tensor([len(p) for p in pending])  # [N]
        for i, p in enumerate(pending):
            ids[i, M - len(p) : M] = torch.tensor(p)
        fvalid[:, :M] = torch.arange(M).unsqueeze(0) >= (M - m).unsqueeze(1)
        base = self.start + self.consumed  # [N] position of s[consumed]
        fpos[:, :M] = (base.unsqueeze(1) + torch.arange(M).unsqueeze(0) - (M - m).unsqueeze(1)).clamp_min(0)
        fbranch = torch.zeros(W, dtype=torch.long)  # [W]
        if n:
            ids[:, M:] = branches.reshape(N, n * T)
            fvalid[:, M:] = True
            depth = torch.arange(T).repeat(n)  # [n*T]
            fpos[:, M:] = (base + m).unsqueeze(1) + depth.unsqueeze(0)
            fbranch[M:] = torch.arange(1, n + 1).repeat_interleave(T)
        self.consumed = self.consumed + m
        self.branch_len = T
        return ids, fvalid, fpos, fbranch

    def branch_step_columns(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions [N, n] and branch ids [n] of one more token in each of the n open branches."""
        pos = (self.start + self.consumed + self.branch_len).unsqueeze(1).expand(self.rows, n)  # [N, n]
        return pos.contiguous(), torch.arange(1, n + 1)

    # ---- keeping what was accepted ---------------------------------------------------------------
    def commit(self, lengths: list[int], winners: list[int] | None = None) -> None:
        """Sequence b's response now has lengths[b] tokens, extending the old one by the first tokens of
        branch winners[b] (1..n; 0 or None: no branch) and at most one more. Keeps
        s[:min(consumed + branch tokens, length)] per row; everything else becomes holes."""
        win = torch.tensor([w or 0 for w in (winners or [0] * len(lengths))])[self.seq]  # [N]
        length = torch.tensor(lengths)[self.seq]  # [N]
        cb = self.branch.unsqueeze(0)  # [1, C]
        own = self.valid & ((cb == 0) | (cb == win.unsqueeze(1)))  # [N, C] in s order
        total = self.consumed + torch.where(win > 0, self.branch_len, 0)  # [N]
        keep = torch.minimum(total, length)  # [N]
        self.valid = own & (own.long().cumsum(1) <= (keep + self.start).unsqueeze(1))
        self.branch = torch.zeros_like(self.branch)
        self.consumed, self.branch_len = keep, 0

    def unowned_tail(self) -> int:
        """Trailing columns no row owns (the cache may drop them)."""
        used = self.valid.any(0)  # [C]
        last = int(used.nonzero().max()) + 1 if used.any() else 0
        return self.columns - last

    def crop(self, drop: int) -> None:
        keep = self.columns - drop
        self.valid, self.branch = self.valid[:, :keep], self.branch[:keep]

    def compaction(self) -> torch.Tensor:
        """The gather index [N, Cn] that moves every row's valid columns, in order, to the right end of a
        cache of Cn = max(owned) columns; applies it to the layout (the caller gathers the keys/values)."""
        counts = self.valid.sum(1)  # [N]
        Cn, (N, C) = int(counts.max()), self.valid.shape
        order = torch.argsort((~self.valid).long() * C + torch.arange(C), dim=1, stable=True)  # valid first
        idx = torch.zeros(N, Cn, dtype=torch.long)  # [N, Cn]
        valid = torch.zeros(N, Cn, dtype=torch.bool)  # [N, Cn]
        for i in range(N):
            k = int(counts[i])
            if k:
                idx[i, Cn - k :] = order[i, :k]
                valid[i, Cn - k :] = True
        self.valid, self.branch = valid, torch.zeros(Cn, dtype=torch.long)
        return idx

    # ---- rows leaving and joining ----------------------------------------------------------------
    def take(self, rows: torch.Tensor, seq: torch.Tensor) -> None:
        """Keep only `rows`, which now score sequences `seq` (renumbered)."""
        self.valid = self.valid[rows]
        self.seq = seq
        self.start, self.consumed = self.start[rows], self.consumed[rows]
        self.last_context_token = self.last_context_token[rows]

    def join(self, other: CacheLayout, seq_offset: int) -> int:
        """Append `other`'s rows (their sequences shifted by seq_offset); the shorter layout is left-padded
        with holes. Both must be between rounds. Returns the joined column count."""
        if self.branch_len or other.branch_len or bool(self.branch.any()) or bool(other.branch.any()):
            raise RuntimeError("groups can only be joined between rounds (a branch is open)")
        C = max(self.columns, other.columns)

        def holes(valid: torch.Tensor) -> torch.Tensor:  # [n, c] -> [n, C]
            return torch.cat([valid.new_zeros(valid.shape[0], C - valid.shape[1]), valid], 1)

        self.valid = torch.cat([holes(self.valid), holes(other.valid)], 0)  # [N_a + N_b, C]
        self.branch = torch.zeros(C, dtype=torch.long)
        self.seq = torch.cat([self.seq, other.seq + seq_offset])
        self.start = torch.cat([self.start, other.start])
        self.consumed = torch.cat([self.consumed, other.consumed])
        self.last_context_token = torch.cat([self.last_context_token, other.last_context_token])
        return C
