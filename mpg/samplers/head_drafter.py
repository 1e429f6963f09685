"""Drafting from a draft head (`mpg.draft_head`): the composed target's features, predicted a few
positions ahead, through the base's output embedding.

What the drafter keeps per sequence: the last `window` true pairs (f_j, y_{j+1}), f_j the target's
composed feature at response position j (j = 0 is the contexts' last token) and y_{j+1} the token that
followed it. The scoring pass of every round computes the true features along the drafted chunk
(`observe`); `commit` keeps those the sequence's response now agrees with: after a round that took a
drafted tokens and one more, f_n0 .. f_n0+a are true, and nothing else is. Drafting y_{n+1} runs the
head over the window ending in (f_{n-1}, y_n): its output predicts f_n, and W f_n is the draft's
logits; each further drafted token appends (prediction, token) and runs the head again (the window is
a few positions, recomputed whole: no cache to roll back).

A sequence with no true feature yet (its first round) drafts one token from the uniform law over the
vocabulary: any q leaves speculative exact, and the round's scoring pass gives the features.
"""

from __future__ import annotations

import math

import torch

from ..distributions import sample
from ..draft_head import DraftHead
from .drafting import Draft, Drafter, _ends, _proposal

__all__ = ["HeadDrafter"]


class HeadDrafter(Drafter):
    """Drafts from a `DraftHead` over each sequence's window of true (feature, token) pairs."""

    wants_features = True

    def __init__(self, head: DraftHead, embed: torch.nn.Module, out: torch.nn.Module, n_seqs: int):
        self.head, self.embed, self.out = head, embed, out
        self.device = out.weight.device
        H = head.config.hidden_size
        # per sequence its window's true features [L_b, H], L_b <= window
        self.feats = [torch.zeros(0, H, device=self.device) for _ in range(n_seqs)]
        self.known = [0] * n_seqs  # the response length its window ends at (-1: no true feature there)
        self._seen: list[tuple[int, torch.Tensor]] | None = None  # from observe: (n0, [n, K+1, H]) each
        self.passes = 0

    # ---- what the scoring pass found ------------------------------------------------------------
    def observe(self, ys: list[list[int]], features: torch.Tensor) -> None:
        """features: [B, n, K+1, H] the composed features of this round's scoring pass (column 0 at the
        responses' last token, column t after drafted token t of branch i)."""
        self._seen = [(len(y), features[b].detach().float().to(self.device)) for b, y in enumerate(ys)]

    def commit(self, lengths: list[int], winners: list[int] | None = None) -> None:
        seen, self._seen = self._seen, None
        if seen is None:
            return
        for b, n in enumerate(lengths):
            n0, f = seen[b]
            if n <= n0:
                continue
            winner = winners[b] if winners is not None else 1
            true_cols = f.shape[1] if winner else 1  # column 0 reads committed tokens only
            if n - n0 > true_cols:  # no true feature at n - 1: nothing to draft from until the next pass
                self.feats[b], self.known[b] = self.feats[b][:0], -1
                continue
            if self.known[b] != n0:  # the window does not end where this pass began: start afresh
                self.feats[b] = self.feats[b][:0]
            cols = f[max(winner, 1) - 1, : n - n0]  # [n - n0, H]: f_n0 .. f_{n-1}
            self.feats[b] = torch.cat([self.feats[b], cols])[-self.head.config.window :]
            self.known[b] = n

    # ---- drafting ----------------------------------------------------------------------------------
    def draft(self, seqs, ks, n, u, alpha) -> Draft:
        B, K = len(seqs), max(ks)
        ready = [self.known[b] == len(s.y) and self.feats[b].shape[0] > 0 for b, s in enumerate(seqs)]
        V = self.head.config.vocab_size
        q_uniform = torch.full((V,), -math.log(V), device=self.device)  # [V]
        ready_mask = torch.tensor(ready, device=self.device)  # [B]
        lengths_cap = [k if r else 1 for k, r in zip(ks, ready)]
        # each sequence's window, repeated for its n branches, left-padded: [B*n, L]
        L = max([f.shape[0] for f in self.feats] + [1])
        H = self.head.config.hidden_size
        feats = torch.zeros(B, L + K, H, device=self.device)
        toks = torch.zeros(B, L + K, dtype=torch.long, device=self.device)
        valid = torch.zeros(B, L + K, dtype=torch.bool, device=self.device)
        for b, s in enumerate(seqs):
            Lb = self.feats[b].shape[0] if ready[b] else 0
            if Lb:  # the pairs' tokens are the response's own: y_{j+1} for the last Lb positions j
                feats[b, L - Lb : L] = self.feats[b]
                toks[b, L - Lb : L] = torch.tensor(s.y[len(s.y) - Lb :], dtype=torch.long, device=self.device)
                valid[b, L - Lb : L] = True
        feats, toks, valid = (x.repeat_interleave(n, 0) for x in (feats, toks, valid))  # [B*n, L+K, ...]
        out_toks, qs = [], []
        for t in range(K):
            g = self._predict(feats[:, : L + t], toks[:, : L + t], valid[:, : L + t])  # [B*n, H]
            logits = self.out(g.to(self.out.weight.dtype)).float().view(B, n, -1)  # [B, n, V]
            q = _proposal(logits, seqs, alpha)  # [B, n, V]
            if not all(ready):
                q[~ready_mask] = q_uniform
            tok = sample(q, u[:, :, t])  # [B, n]
            out_toks.append(tok)
            qs.append(q)
            done = torch.stack(out_toks, 2)  # [B, n, t+1]
            if t + 1 == K or t + 1 >= max(lengths_cap) or bool(_ends(done, seqs).any(2).all()):
                break
            feats[:, L + t] = g.float()
            toks[:, L + t] = tok.reshape(-1)
            valid[:, L + t] = True
        tokens = torch.stack(out_toks, 2)  # [B, n, T]
        is_end = _ends(tokens, seqs)  # [B, n, T]
        first = torch.where(is_end.any(2), is_end.int().argmax(2) + 1, tokens.shape[2])  # [B, n]
        lengths = torch.minimum(first, torch.tensor(lengths_cap).unsqueeze(1)).tolist()
        return Draft(tokens, torch.stack(qs, 2), lengths)

    def _predict(self, feats: torch.Tensor, toks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The head's prediction at each row's last position: [R, L, H] + [R, L] -> [R, H]."""
        dtype = next(self.head.parameters()).dtype
        emb = self.embed(toks.clamp(min=0).to(self.embed.weight.device)).to(dtype)  # [R, L, H]
        self.passes += 1
        return self.head(feats.to(dtype), emb, valid)[:, -1]

    # ---- sequences leaving and joining -------------------------------------------------------------
    def select(self, keep) -> None:
        self.feats = [self.feats[i] for i in keep]
        self.known = [self.known[i] for i in keep]

    def absorb(self, other: Drafter) -> None:
        if not isinstance(other, HeadDrafter) or other.head is not self.head:
            raise ValueError("drafters of different kinds cannot be joined")
        self.feats += other.feats
        self.known += other.known
        self.passes += other.passes

    @property
    def forward_passes(self) -> int:
        return self.passes
