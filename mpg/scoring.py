"""Batched multi-policy scoring: one KV cache per model for every (sequence, policy) row.

A `PolicyGroup` holds the rows that run on one set of weights (the base model and its LoRA
adapters, or one separate model): row = b * R + r for sequence b and policy r. Every policy scores
the same response y of its sequence after its own context.

Invariant per row: the cache holds context[:-1] + s[:consumed], s = [context[-1]] + y, with
consumed <= len(y). Feeding s[consumed:] (at least one token) yields the next-token distribution.

Ragged rows without copies. The cache grows by columns shared by all rows; each row marks the
columns it owns (`valid`). Rows that need fewer new tokens are left-padded inside a feed, and
tokens a row rejects become holes (masked columns) instead of being cut out, so sequences of one
batch may accept different numbers of tokens without re-running accepted work. Trailing columns
that no row owns are cropped; when holes pile up the cache is compacted (one gather).

Branches. n alternative chunks after the same prefix (SCR candidates, pilot drafts) are fed side by
side in ONE pass as branches 1..n: a branch token attends to the shared columns and to its own
branch only (an explicit 4D mask), with its own positions. `commit` keeps one branch per sequence as
ordinary columns and turns the others into holes, so candidates need no cache copies.

Joining (continuous batching). Sequences that arrive while a batch runs are prefilled in a group of
their own, then `absorb`ed between rounds: their rows are appended, and the shorter cache is
left-padded with holes, which changes nothing for any row (the same reason compaction may move columns).
"""

from __future__ import annotations

import collections
import contextlib

import torch

from .aggregators import implausible
from .kv_cache import GrowingCache
from .steering import steered

__all__ = ["HeadCache", "MultiPolicyScorer", "PolicyGroup", "shared_heads"]

COMPACT_MIN_HOLES = 64  # compact when at least this many columns are holes for the fullest row ...
COMPACT_FRACTION = 0.25  # ... and they are at least this share of the cache


# Model types whose logits are exactly the output embedding applied to the decoder's last hidden state
# (no soft-capping or scaling after it), so a group may apply that embedding itself, to some tokens only.
HEAD_SKIP_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})

SHARED_HEAD_MIN = 4  # a context head is prefilled on its own (and cached) when it is at least this long


def shared_heads(contexts: list[list[int]], family: list, hint: list[int] | None = None) -> list[int]:
    """Per row: the length of the context head it shares with every row of its family (0: none).

    hint[i] caps row i's head (the engine passes where the prompt starts, so that a family of one row
    has a head too); a head always stops before the context's last token, which is fed with the
    response (the invariant)."""
    heads = [0] * len(contexts)
    for f in dict.fromkeys(family):
        rows = [i for i, g in enumerate(family) if g == f]
        first = contexts[rows[0]]
        L = min(min(len(contexts[i]) - 1, hint[i] if hint is not None else len(contexts[i])) for i in rows)
        if hint is None and len(rows) < 2:
            continue
        for i in rows[1:]:
            L = next((j for j in range(L) if contexts[i][j] != first[j]), L)
        if L >= SHARED_HEAD_MIN:
            for i in rows:
                heads[i] = L
    return heads


class HeadCache:
    """The keys and values of context heads already computed, by (weights, head tokens); least recently
    used first out, at most `size` heads. A head's keys and values depend on nothing but the weights
    (model, adapter, steering) and its tokens at positions 0.., so any group may reuse them."""

    def __init__(self, size: int = 64):
        self.size, self.entries = size, collections.OrderedDict()
        self.hits = self.misses = 0

    def get(self, key):
        kv = self.entries.get(key)
        if kv is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end(key)
        return kv

    def put(self, key, kv) -> None:
        self.entries[key] = kv
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


class PolicyGroup:
    """Rows = (sequence, policy) pairs sharing one model; `adapters[i]` is row i's LoRA name or None."""

    def __init__(
        self,
        model,
        adapters: list[str | None],
        contexts: list[list[int]],
        pad_id: int,
        is_peft: bool,
        steer_deltas: dict | None = None,
        row_seq: list[int] | None = None,
        lora=None,
        family: list | None = None,
        head_hint: list[int] | None = None,
        weights_key: list | None = None,
        head_cache: HeadCache | None = None,
    ):
        """family[i]: rows of one family (one policy, other prompts) share their contexts' common head
        (system prompt, template, chat markup up to the question): it is prefilled once per family
        (`shared_heads`, capped by head_hint). With `head_cache`, heads are also looked up there by
        (weights_key[i], head tokens) and stored, so later groups skip them."""
        if any(len(c) == 0 for c in contexts):
            raise ValueError("a policy context tokenised to nothing")
        self.model, self.is_peft, self.lora, self.pad_id = model, is_peft, lora, pad_id
        self.device = next(model.parameters()).device
        self._base = model.get_base_model() if is_peft else model  # the CausalLM under any PEFT wrapper
        self.head_skippable = self._can_skip_head()  # fixed for the group's life (absorb: same model)
        self.adapters = list(adapters)
        N = len(contexts)
        self.row_seq = torch.tensor(row_seq if row_seq is not None else [0] * N)  # [N]
        self.steer_deltas = steer_deltas or {}  # {layer: [N, H]}
        self.last_context_token = torch.tensor([c[-1] for c in contexts])  # [N]
        self.start_pos = torch.tensor([len(c) - 1 for c in contexts])  # [N]
        self.consumed = torch.zeros(N, dtype=torch.long)  # [N]
        self.valid = torch.zeros(N, 0, dtype=torch.bool)  # [N, C]
        self.col_branch = torch.zeros(0, dtype=torch.long)  # [C]
        self.branch_len = 0  # tokens fed so far into the open branches (same for every branch)
        self.cache = GrowingCache()
        self.forward_passes = 0
        heads = shared_heads(contexts, family, head_hint) if family is not None else [0] * N
        if any(heads):
            keys = weights_key if weights_key is not None else [(a, None) for a in self.adapters]
            self._prefill_heads(contexts, family, heads, keys, head_cache)
        self._feed_rows([c[h:-1] for c, h in zip(contexts, heads)], heads)

    def _feed_rows(self, tokens: list[list[int]], start: list[int]) -> None:
        """Append each row's tokens (ragged, left-padded) at positions start[i], start[i] + 1, ..."""
        W = max(len(t) for t in tokens)
        if not W:
            return
        N = len(tokens)
        ids = torch.full((N, W), self.pad_id, dtype=torch.long)  # [N, W]
        mask = torch.zeros(N, W, dtype=torch.bool)  # [N, W]
        for i, t in enumerate(tokens):
            if t:
                ids[i, W - len(t) :] = torch.tensor(t)
                mask[i, W - len(t) :] = True
        pos = torch.tensor(start).unsqueeze(1) + (mask.long().cumsum(-1) - 1).clamp_min(0)  # [N, W]
        self._forward(ids, mask, pos, torch.zeros(W, dtype=torch.long), keep_logits=1)

    def _prefill_heads(self, contexts, family, heads, weights_key, head_cache) -> None:
        """Each family's head once: from `head_cache`, or fed in one pass for the families it lacks (one
        row each); then the cache starts as every row's family head, right-aligned (holes before it;
        rows without a head are all holes and feed their whole context next)."""
        fams = list(dict.fromkeys(f for f, h in zip(family, heads) if h))
        rep = {f: family.index(f) for f in fams}  # the family's first row stands for it
        key = {f: (weights_key[rep[f]], tuple(contexts[rep[f]][: heads[rep[f]]])) for f in fams}
        kv = {f: head_cache.get(key[f]) for f in fams} if head_cache is not None else dict.fromkeys(fams)
        missing = [f for f in fams if kv[f] is None]
        if missing:
            rows = [rep[f] for f in missing]
            adapters, deltas = self.adapters, self.steer_deltas
            self.adapters = [adapters[r] for r in rows]
            self.steer_deltas = {
                L: d[torch.tensor(rows, device=d.device)] for L, d in deltas.items()
            }  # [F, H]
            self.valid = torch.zeros(len(rows), 0, dtype=torch.bool)  # [F, 0]
            self._feed_rows([contexts[r][: heads[r]] for r in rows], [0] * len(rows))
            W = self.valid.shape[1]
            for j, f in enumerate(missing):  # family f's head: the last heads[rep[f]] columns of its row
                L = heads[rep[f]]
                kv[f] = [
                    (lay.keys[j, :, W - L :].clone(), lay.values[j, :, W - L :].clone())
                    for lay in self.cache.layers
                ]
                if head_cache is not None:
                    head_cache.put(key[f], kv[f])
            self.adapters, self.steer_deltas = adapters, deltas
        N, C = len(contexts), max(heads)
        self.cache = GrowingCache()
        for layer in range(len(kv[fams[0]])):
            k0 = kv[fams[0]][layer][0]  # [H, L, D]
            ks = k0.new_zeros(N, k0.shape[0], C, k0.shape[2])  # [N, H, C, D]
            vs = torch.zeros_like(ks)
            for i, (f, h) in enumerate(zip(family, heads)):
                if h:
                    ks[i, :, C - h :], vs[i, :, C - h :] = kv[f][layer]
            self.cache.update(ks, vs, layer)
        self.valid = torch.arange(C).unsqueeze(0) >= (C - torch.tensor(heads)).unsqueeze(1)  # [N, C]
        self.col_branch = torch.zeros(C, dtype=torch.long)

    @property
    def rows(self) -> int:
        return len(self.adapters)

    # ---- the one forward ----------------------------------------------------------------------
    def _forward(
        self, ids, feed_valid, feed_pos, feed_branch, keep_logits: int, hidden: bool = False
    ) -> torch.Tensor:
        """Append a feed of W columns to every row. ids, feed_valid, feed_pos: [N, W]; feed_branch: [W].

        Returns logits of the last `keep_logits` columns: [N, keep_logits, V]; with `hidden`, the
        decoder's last hidden states there instead, [N, keep_logits, H] (`head` turns them into logits).
        """
        valid = torch.cat([self.valid, feed_valid], 1)  # [N, C+W]
        branch = torch.cat([self.col_branch, feed_branch])  # [C+W]
        C, W = self.valid.shape[1], ids.shape[1]
        # query w sees key k iff k is valid for the row, k is not after w, and k is shared or in w's branch
        causal = torch.ones(W, C + W, dtype=torch.bool).tril(C)  # [W, C+W]
        same = (branch.unsqueeze(0) == 0) | (branch.unsqueeze(0) == feed_branch.unsqueeze(1))  # [W, C+W]
        allowed = valid.unsqueeze(1) & (causal & same).unsqueeze(0)  # [N, W, C+W]
        dtype = self.model.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
        kwargs = {}
        if self.is_peft and self.lora is None:
            kwargs["adapter_names"] = [a if a is not None else "__base__" for a in self.adapters]
        rows_ctx = self.lora.rows(self.adapters) if self.lora is not None else contextlib.nullcontext()
        inputs = dict(
            input_ids=ids.to(self.device),
            attention_mask=mask.unsqueeze(1).to(self.device),
            position_ids=feed_pos.to(self.device),
            cache=self.cache,
            use_cache=True,
        )
        if hidden and not self.head_skippable:
            raise RuntimeError("this group's model cannot return hidden states (head_skippable)")
        with rows_ctx, steered(self.model, self.steer_deltas):
            if self.head_skippable:  # the head applied here, to a contiguous slice (see below)
                out = self._base.get_decoder()(**inputs)
            else:
                out = self.model(**inputs, logits_to_keep=keep_logits, **kwargs)
        self.cache = out.cache
        self.valid, self.col_branch = valid, branch
        self.forward_passes += 1
        if not self.head_skippable:
            return out.logits
        # Contiguous: a strided [N, K, H] slice (K < W, as in a prefill) sends torch's linear to a bmm
        # over a per-row copy of the 49k-row head (measured: 0.56 s per 9-row bf16 prefill on the CPU).
        last = out.last_hidden_state[:, -keep_logits:].contiguous()  # [N, K, H]
        return last if hidden else self.head(last)

    def _can_skip_head(self) -> bool:
        """Whether `feed(..., hidden=True)` works here: the model's logits are exactly `head` applied to
        its decoder's last hidden states (HEAD_SKIP_MODEL_TYPES; the head not under an accelerate
        hook, which may hold its weights elsewhere), and rows do not pick their adapters through PEFT's
        own mixed-batch path (`adapter_names`, even all "__base__": without it PEFT would apply its
        active adapter to every row), which only the full forward takes."""
        head = self.head
        return (
            getattr(self._base.config, "model_type", None) in HEAD_SKIP_MODEL_TYPES
            and head is not None
            and not hasattr(head, "_hf_hook")
            and not (self.is_peft and self.lora is None)
        )

    @property
    def head(self) -> torch.nn.Module:
        """The output embedding: logits = head(last hidden state) (when `head_skippable`)."""
        return self._base.get_output_embeddings()

    # ---- feeding -------------------------------------------------------------------------------
    def pending(self, ys: list[list[int]]) -> list[list[int]]:
        """Per row, s[consumed:] -- the tokens its cache still lacks (at least one)."""
        out = []
        for i in range(self.rows):
            y, c = ys[int(self.row_seq[i])], int(self.consumed[i])
            assert c <= len(y), "cache is ahead of the response; commit first"
            s_tail = y[c - 1 :] if c else [int(self.last_context_token[i])] + y
            out.append(s_tail)
        return out

    def feed(
        self, ys: list[list[int]], branches: torch.Tensor | None = None, hidden: bool = False
    ) -> torch.Tensor:
        """Feed each row's pending tokens, then n branch chunks of T tokens side by side.

        ys: the response of every sequence; branches: [N, n, T] (row-wise) or None.
        returns logits [N, 1 + n*T, V]: column 0 predicts the first branch token (or the next token),
        column 1 + j*T + t the token after branch j's token t (hidden: last hidden states, [.., H]).
        """
        pend = self.pending(ys)
        M = max(len(p) for p in pend)
        n, T = (0, 0) if branches is None else branches.shape[1:]
        N = self.rows
        ids = torch.full((N, M + n * T), self.pad_id, dtype=torch.long)  # [N, W]
        fvalid = torch.zeros(N, M + n * T, dtype=torch.bool)  # [N, W]
        fpos = torch.zeros(N, M + n * T, dtype=torch.long)  # [N, W]
        m = torch.tensor([len(p) for p in pend])  # [N]
        for i, p in enumerate(pend):
            ids[i, M - len(p) : M] = torch.tensor(p)
        fvalid[:, :M] = torch.arange(M).unsqueeze(0) >= (M - m).unsqueeze(1)
        base = self.start_pos + self.consumed  # [N] position of s[consumed]
        fpos[:, :M] = (base.unsqueeze(1) + torch.arange(M).unsqueeze(0) - (M - m).unsqueeze(1)).clamp_min(0)
        fbranch = torch.zeros(M + n * T, dtype=torch.long)  # [W]
        if n:
            ids[:, M:] = branches.reshape(N, n * T)
            fvalid[:, M:] = True
            depth = torch.arange(T).repeat(n)  # [n*T]
            fpos[:, M:] = (base + m).unsqueeze(1) + depth.unsqueeze(0)
            fbranch[M:] = torch.arange(1, n + 1).repeat_interleave(T)
        self.consumed = self.consumed + m
        self.branch_len = T
        return self._forward(ids, fvalid, fpos, fbranch, keep_logits=1 + n * T, hidden=hidden)

    def extend_branches(self, tokens: torch.Tensor) -> torch.Tensor:
        """Add one token to each of the n open branches. tokens: [N, n] -> logits [N, n, V]."""
        N, n = tokens.shape
        fpos = (self.start_pos + self.consumed + self.branch_len).unsqueeze(1).expand(N, n)  # [N, n]
        fbranch = torch.arange(1, n + 1)  # [n]
        logits = self._forward(
            tokens, torch.ones(N, n, dtype=torch.bool), fpos.contiguous(), fbranch, keep_logits=n
        )
        self.branch_len += 1
        return logits

    # ---- keeping what was accepted ---------------------------------------------------------------
    def commit(self, lengths: list[int], winners: list[int] | None = None) -> None:
        """After a round: sequence b's response now has lengths[b] tokens, extending the old one by
        the first tokens of branch winners[b] (1..n; 0 or None: no branch) and at most one more.
        Keeps s[:min(consumed + branch tokens, length)] per row; everything else becomes holes."""
        win = torch.tensor([w or 0 for w in (winners or [0] * len(lengths))])[self.row_seq]  # [N]
        length = torch.tensor(lengths)[self.row_seq]  # [N]
        cb = self.col_branch.unsqueeze(0)  # [1, C]
        own = self.valid & ((cb == 0) | (cb == win.unsqueeze(1)))  # [N, C] in s order
        total = self.consumed + torch.where(win > 0, self.branch_len, 0)  # [N]
        keep = torch.minimum(total, length)  # [N]
        self.valid = own & (own.long().cumsum(1) <= (keep + self.start_pos).unsqueeze(1))
        self.col_branch = torch.zeros_like(self.col_branch)
        self.consumed, self.branch_len = keep, 0
        self._tidy()

    def _tidy(self) -> None:
        """Crop trailing columns nobody owns; compact when that would free many columns. Compaction keeps
        the fullest row's columns, so it frees C - max(counts) of them: rows that are merely shorter (an
        anchor's short context beside an expert's long one) are no reason to compact, every step."""
        used = self.valid.any(0)  # [C]
        C = used.numel()
        last = int(used.nonzero().max()) + 1 if used.any() else 0
        if last < C:
            self.cache.crop(last - C)
            self.valid, self.col_branch = self.valid[:, :last], self.col_branch[:last]
        counts = self.valid.sum(1)  # [N]
        C = self.valid.shape[1]
        holes = C - int(counts.max()) if C else 0  # columns compaction would free
        if holes >= COMPACT_MIN_HOLES and holes >= COMPACT_FRACTION * C:
            self._compact(counts)

    def _compact(self, counts: torch.Tensor) -> None:
        """Move every row's valid columns to the right end of a shorter cache. Keys carry their rotary
        positions already and later feeds pass explicit position ids, so moving columns is safe."""
        Cn = int(counts.max())
        N, C = self.valid.shape
        # source column for each (row, new column): valid columns in order, right-aligned
        order = torch.argsort(
            (~self.valid).long() * C + torch.arange(C), dim=1, stable=True
        )  # valid first, in order
        idx = torch.zeros(N, Cn, dtype=torch.long)  # [N, Cn]
        new_valid = torch.zeros(N, Cn, dtype=torch.bool)
        for i in range(N):
            k = int(counts[i])
            if k:
                idx[i, Cn - k :] = order[i, :k]
                new_valid[i, Cn - k :] = True
        for layer in self.cache.layers:
            if getattr(layer, "keys", None) is None or layer.keys.numel() == 0:
                continue
            H, D = layer.keys.shape[1], layer.keys.shape[3]
            g = idx.to(layer.keys.device)[:, None, :, None].expand(N, H, Cn, D)  # a sharded base: per layer
            layer.keys = layer.keys.gather(2, g)
            layer.values = layer.values.gather(2, g)
        self.valid = new_valid
        self.col_branch = torch.zeros(Cn, dtype=torch.long)

    def absorb(self, other: "PolicyGroup", seq_offset: int) -> None:
        """Append `other`'s rows (new sequences joining a running batch; their sequence numbers shift by
        `seq_offset`). Both groups must be between rounds (no open branches) and run the same model.

        The shorter cache is left-padded with holes: columns no row owns are never attended to, keys
        carry their rotary positions and every feed passes explicit positions, so where a row's columns
        sit does not matter (the same reason `_compact` may move them)."""
        if self.branch_len or other.branch_len or bool(self.col_branch.any()) or bool(other.col_branch.any()):
            raise RuntimeError("groups can only be joined between rounds (a branch is open)")
        if other.model is not self.model:
            raise ValueError("groups on different models cannot be joined")
        C = max(self.valid.shape[1], other.valid.shape[1])

        def holes(valid: torch.Tensor) -> torch.Tensor:  # [N, c] -> [N, C], new columns invalid
            return torch.cat([valid.new_zeros(valid.shape[0], C - valid.shape[1]), valid], 1)

        ours, theirs = list(self.cache.layers), list(other.cache.layers)
        for i in range(max(len(ours), len(theirs))):
            a = ours[i] if i < len(ours) else None
            b = theirs[i] if i < len(theirs) else None
            filled = [
                x for x in (a, b) if x is not None and getattr(x, "keys", None) is not None and x.keys.numel()
            ]
            if not filled:
                continue
            like = filled[0].keys  # [N, H, c, D]
            parts_k, parts_v = [], []
            for layer, n in ((a, self.rows), (b, other.rows)):
                if layer is not None and getattr(layer, "keys", None) is not None and layer.keys.numel():
                    k, v = layer.keys, layer.values  # [n, H, c, D]
                else:
                    k = v = like.new_zeros(n, like.shape[1], 0, like.shape[3])
                pad = like.new_zeros(n, like.shape[1], C - k.shape[2], like.shape[3])  # [n, H, C-c, D]
                parts_k.append(torch.cat([pad, k.to(like.device)], 2))
                parts_v.append(torch.cat([pad, v.to(like.device)], 2))
            keeper = filled[0]
            keeper.keys, keeper.values = torch.cat(parts_k, 0), torch.cat(parts_v, 0)  # [N_a + N_b, H, C, D]
            if a is not keeper:  # this group had no columns on this layer: adopt the filled layer object
                if a is None:
                    self.cache.layers.append(keeper)
                else:
                    self.cache.layers[i] = keeper
        self.valid = torch.cat([holes(self.valid), holes(other.valid)], 0)  # [N_a + N_b, C]
        self.col_branch = torch.zeros(C, dtype=torch.long)
        self.adapters += other.adapters
        self.row_seq = torch.cat([self.row_seq, other.row_seq + seq_offset])
        for name in ("last_context_token", "start_pos", "consumed"):
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))
        if set(self.steer_deltas) != set(other.steer_deltas):
            raise ValueError("groups with different steering layers cannot be joined")
        self.steer_deltas = {
            L: torch.cat([d, other.steer_deltas[L].to(d.device)]) for L, d in self.steer_deltas.items()
        }
        self.forward_passes += other.forward_passes

    def select(self, rows: torch.Tensor, row_seq: torch.Tensor) -> None:
        """Keep only `rows` (e.g. the rows of unfinished sequences), renumbering their sequences."""
        for layer in self.cache.layers:  # per layer: a sharded base keeps layers on several devices
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                layer.batch_select_indices(rows.to(layer.keys.device))
        self.adapters = [self.adapters[int(i)] for i in rows]
        self.row_seq = row_seq
        for name in ("last_context_token", "start_pos", "consumed", "valid"):
            setattr(self, name, getattr(self, name)[rows])
        self.steer_deltas = {L: d[rows.to(d.device)] for L, d in self.steer_deltas.items()}
        self._tidy()


class MultiPolicyScorer:
    """Scores every sequence's response under its P unique policies, one batched forward per model.

    policy i of every sequence lives in groups[index[i][0]] at policy slot index[i][1] (row b*R + slot).
    """

    def __init__(self, groups: list[PolicyGroup], index: list[tuple[int, int]], n_seqs: int):
        self.groups, self.index, self.n_seqs = groups, index, n_seqs

    def score(
        self,
        ys: list[list[int]],
        chunks: torch.Tensor | None = None,
        support: tuple[int, float] | None = None,
    ) -> torch.Tensor:
        """Raw next-token logits [B, P, n, K+1, V] of every policy before each chunk token and after it.

        ys: each sequence's accepted response; chunks: [B, n, K] drafted alternatives (None: K = 0, n = 1).
        support: (anchor policy, alpha): only the anchor's logits are complete; every other policy's
        are exact on the tokens the anchor finds plausible at that position and 0 elsewhere (needs
        `head_skippable`; see `_logits_on_support` for when that is all a target reads).
        """
        B = self.n_seqs
        n, K = (1, 0) if chunks is None else chunks.shape[1:]
        feeds = [
            g.feed(ys, None if chunks is None else chunks[g.row_seq], hidden=support is not None)
            for g in self.groups
        ]  # per group [N_g, 1 + n*K, V] (hidden: [N_g, 1 + n*K, H])
        if support is not None:
            feeds = self._logits_on_support(feeds, *support)
        outs = []
        for g, lg in zip(self.groups, feeds):
            first = lg[:, :1].unsqueeze(1).expand(-1, n, 1, -1)  # [N, n, 1, V]
            rest = lg[:, 1:].reshape(g.rows, n, K, lg.shape[-1])  # [N, n, K, V]
            outs.append(
                torch.cat([first, rest], 2).reshape(B, g.rows // B, n, K + 1, -1)
            )  # [B, R, n, K+1, V]
        return self._by_policy(outs)

    def _by_policy(self, outs: list[torch.Tensor]) -> torch.Tensor:
        """Per-group logits [B, R_g, n, K+1, V] -> [B, P, n, K+1, V] in policy order."""
        if len(outs) == 1 and [r for _, r in self.index] == list(range(outs[0].shape[1])):
            return outs[0]
        return torch.stack([outs[gi][:, r].to(outs[0].device) for gi, r in self.index], 1)

    @property
    def head_skippable(self) -> bool:
        return all(g.head_skippable for g in self.groups)

    def _logits_on_support(self, hidden: list[torch.Tensor], anchor: int, alpha: float) -> list[torch.Tensor]:
        """Per group, last hidden states [N_g, W, H] -> logits [N_g, W, V]: the anchor's rows over the
        whole vocabulary, every other row only on the tokens the anchor gives >= alpha / 2 x its top
        token's probability at some position of the feed (`aggregators.implausible`), 0 elsewhere.

        Why this is enough for a product target kept to the anchor's plausible set (plausibility
        alpha): the target never reads another policy outside that set, and a weighted sum of log-probs
        needs no normaliser: a row's log-softmax of this vector differs from its true log-probs by one
        constant on the set, which the target's own normalisation removes. So the output embedding
        (49k x 576 on SmolLM2, a fifth of a row's weights) runs in full for the anchor's rows only.
        Not for a mixture (its terms need true normalisers) nor for SCR's chunk weights (the same).
        The set is taken at alpha / 2 so that no rounding can leave out a token the target keeps.
        """
        B = self.n_seqs
        ga, ra = self.index[anchor]
        g_a = self.groups[ga]
        anchor_rows = torch.arange(B) * (g_a.rows // B) + ra  # [B]
        full = g_a.head(hidden[ga][anchor_rows.to(hidden[ga].device)])  # [B, W, V]
        top = full.amax(-1, keepdim=True)  # [B, W, 1]
        kept = (~implausible(full, top, alpha / 2)).reshape(-1, full.shape[-1]).any(0)  # [V]
        vocab = kept.nonzero().squeeze(1)  # [U]
        out = []
        for gi, (g, h) in enumerate(zip(self.groups, hidden)):
            head = g.head
            idx = vocab.to(head.weight.device)
            bias = None if head.bias is None else head.bias[idx]
            part = torch.nn.functional.linear(h.to(head.weight.device), head.weight[idx], bias)  # [N, W, U]
            lg = part.new_zeros(*part.shape[:-1], full.shape[-1])  # [N, W, V]
            lg[..., idx] = part
            if gi == ga:
                lg[anchor_rows.to(lg.device)] = full.to(lg.device)
            out.append(lg)
        return out

    def absorb(self, other: "MultiPolicyScorer") -> None:
        """Append `other`'s sequences (built for the same policy table layout) after this scorer's."""
        if len(other.groups) != len(self.groups) or other.index != self.index:
            raise ValueError("scorers of different policy tables cannot be joined")
        for g, h in zip(self.groups, other.groups):
            g.absorb(h, self.n_seqs)
        self.n_seqs += other.n_seqs

    def commit(self, lengths: list[int], winners: list[int] | None = None) -> None:
        for g in self.groups:
            g.commit(lengths, winners)

    def select(self, keep: list[int]) -> None:
        """Keep sequences `keep` (old numbering), renumbered 0..len(keep)-1."""
        remap = {b: i for i, b in enumerate(keep)}
        for g in self.groups:
            rows = torch.tensor([i for i in range(g.rows) if int(g.row_seq[i]) in remap], dtype=torch.long)
            g.select(rows, torch.tensor([remap[int(g.row_seq[i])] for i in rows], dtype=torch.long))
        self.n_seqs = len(keep)

    @property
    def forward_passes(self) -> int:
        return sum(g.forward_passes for g in self.groups)
