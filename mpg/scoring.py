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
from .cache_layout import CacheLayout
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

    A family of several rows (one policy, several prompts) shares its contexts' longest common prefix:
    the policy's system prompt and template, and whatever the prompts share (a task's instruction). A
    family of one row takes hint[i] (the engine passes where the prompt starts), so that a later batch
    may reuse it. A head always stops before the context's last token, which is fed with the response
    (the invariant)."""
    heads = [0] * len(contexts)
    for f in dict.fromkeys(family):
        rows = [i for i, g in enumerate(family) if g == f]
        first = contexts[rows[0]]
        if len(rows) < 2:
            if hint is None:
                continue
            L = min(len(first) - 1, hint[rows[0]])
        else:
            L = min(len(contexts[i]) - 1 for i in rows)
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
    """Rows = (sequence, policy) pairs sharing one model; `adapters[i]` is row i's LoRA name or None.

    The cache's bookkeeping (which columns each row owns, how far each row is) is `layout`
    (`mpg.cache_layout.CacheLayout`, with the invariant); the group owns the model call and the cache."""

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
        defer_prefill: bool = False,
    ):
        """family[i]: rows of one family (one policy, other prompts) share their contexts' common head
        (system prompt, template, chat markup up to the question): it is prefilled once per family
        (`shared_heads`, capped by head_hint). With `head_cache`, heads are also looked up there by
        (weights_key[i], head tokens) and stored, so later groups skip them. The rest of each context
        (its tail) is fed at once, or with `defer_prefill` piece by piece through `prefill`."""
        if any(len(c) == 0 for c in contexts):
            raise ValueError("a policy context tokenised to nothing")
        self.model, self.is_peft, self.lora, self.pad_id = model, is_peft, lora, pad_id
        self.device = next(model.parameters()).device
        self._base = model.get_base_model() if is_peft else model  # the CausalLM under any PEFT wrapper
        self.head_skippable = self._can_skip_head()  # fixed for the group's life (absorb: same model)
        self.adapters = list(adapters)
        N = len(contexts)
        self.steer_deltas = steer_deltas or {}  # {layer: [N, H]}
        self.layout = CacheLayout.empty(contexts, row_seq if row_seq is not None else [0] * N)
        self.cache = GrowingCache()
        self.forward_passes = 0
        heads = shared_heads(contexts, family, head_hint) if family is not None else [0] * N
        if any(heads):
            keys = weights_key if weights_key is not None else [(a, None) for a in self.adapters]
            self._prefill_heads(contexts, family, heads, keys, head_cache)
        self._tails = [c[h:-1] for c, h in zip(contexts, heads)]  # context tokens still to feed
        self._tail_pos = list(heads)  # the position of each row's next tail token
        if not defer_prefill:
            self.prefill()

    @property
    def ready(self) -> bool:
        """Whether every row's context (but its last token, fed with the response) is in the cache."""
        return not any(self._tails)

    def prefill(self, budget: int | None = None) -> int:
        """Feed at most `budget` more tail tokens per row (None: all) in one pass; returns the columns fed."""
        take = max((len(t) for t in self._tails), default=0)
        if budget is not None:
            take = min(take, budget)
        if not take:
            return 0
        pieces = [t[:take] for t in self._tails]
        self._feed_rows(pieces, self._tail_pos)
        self._tails = [t[take:] for t in self._tails]
        self._tail_pos = [p + len(x) for p, x in zip(self._tail_pos, pieces)]
        return take

    # the layout's tensors, read by callers and tests
    @property
    def valid(self) -> torch.Tensor:
        return self.layout.valid  # [N, C]

    @property
    def col_branch(self) -> torch.Tensor:
        return self.layout.branch  # [C]

    @property
    def row_seq(self) -> torch.Tensor:
        return self.layout.seq  # [N]

    @property
    def rows(self) -> int:
        return len(self.adapters)

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
        layout = self.layout
        if missing:
            rows = [rep[f] for f in missing]
            adapters, deltas = self.adapters, self.steer_deltas
            self.adapters = [adapters[r] for r in rows]
            self.steer_deltas = {
                L: d[torch.tensor(rows, device=d.device)] for L, d in deltas.items()
            }  # [F, H]
            self.layout = CacheLayout.empty([contexts[r] for r in rows], [0] * len(rows))
            self._feed_rows([contexts[r][: heads[r]] for r in rows], [0] * len(rows))
            W = self.layout.columns
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
        layout.valid = torch.arange(C).unsqueeze(0) >= (C - torch.tensor(heads)).unsqueeze(1)  # [N, C]
        layout.branch = torch.zeros(C, dtype=torch.long)
        self.layout = layout

    # ---- the one forward ----------------------------------------------------------------------
    def _forward(
        self, ids, feed_valid, feed_pos, feed_branch, keep_logits: int, hidden: bool = False
    ) -> torch.Tensor:
        """Append a feed of W columns to every row. ids, feed_valid, feed_pos: [N, W]; feed_branch: [W].

        Returns logits of the last `keep_logits` columns: [N, keep_logits, V]; with `hidden`, the
        decoder's last hidden states there instead, [N, keep_logits, H] (`head` turns them into logits).
        """
        allowed = self.layout.attention(feed_valid, feed_branch)  # [N, W, C+W]
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
        self.layout.appended(feed_valid, feed_branch)
        self.forward_passes += 1
        if not self.head_skippable:
            return out.logits
        # Contiguous: a strided [N, K, H] slice (K < W, as in a prefill) sends torch's linear to a bmm
        # over a per-row copy of the output embedding (docs/results.md, "bf16 on the CPU").
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
        return self.layout.pending(ys)

    def feed(
        self, ys: list[list[int]], branches: torch.Tensor | None = None, hidden: bool = False
    ) -> torch.Tensor:
        """Feed each row's pending tokens, then n branch chunks of T tokens side by side.

        ys: the response of every sequence; branches: [N, n, T] (row-wise) or None.
        returns logits [N, 1 + n*T, V]: column 0 predicts the first branch token (or the next token),
        column 1 + j*T + t the token after branch j's token t (hidden: last hidden states, [.., H]).
        """
        n, T = (0, 0) if branches is None else branches.shape[1:]
        ids, fvalid, fpos, fbranch = self.layout.feed_columns(self.pending(ys), n, T, self.pad_id, branches)
        return self._forward(ids, fvalid, fpos, fbranch, keep_logits=1 + n * T, hidden=hidden)

    def extend_branches(self, tokens: torch.Tensor) -> torch.Tensor:
        """Add one token to each of the n open branches. tokens: [N, n] -> logits [N, n, V]."""
        N, n = tokens.shape
        fpos, fbranch = self.layout.branch_step_columns(n)  # [N, n], [n]
        logits = self._forward(tokens, torch.ones(N, n, dtype=torch.bool), fpos, fbranch, keep_logits=n)
        self.layout.branch_len += 1
        return logits

    # ---- keeping what was accepted ---------------------------------------------------------------
    def commit(self, lengths: list[int], winners: list[int] | None = None) -> None:
        """After a round: sequence b's response now has lengths[b] tokens (`CacheLayout.commit`)."""
        self.layout.commit(lengths, winners)
        self._tidy()

    def _tidy(self) -> None:
        """Crop trailing columns nobody owns; compact when that would free many columns. Compaction keeps
        the fullest row's columns, so it frees C - max(counts) of them: rows that are merely shorter (an
        anchor's short context beside an expert's long one) are no reason to compact, every step."""
        drop = self.layout.unowned_tail()
        if drop:
            self.cache.crop(-drop)
            self.layout.crop(drop)
        C = self.layout.columns
        holes = C - int(self.layout.valid.sum(1).max()) if C else 0  # columns compaction would free
        if holes >= COMPACT_MIN_HOLES and holes >= COMPACT_FRACTION * C:
            self._compact()

    def _compact(self) -> None:
        """Move every row's valid columns to the right end of a shorter cache. Keys carry their rotary
        positions already and later feeds pass explicit position ids, so moving columns is safe."""
        idx = self.layout.compaction()  # [N, Cn]
        N, Cn = idx.shape
        for layer in self.cache.layers:
            if getattr(layer, "keys", None) is None or layer.keys.numel() == 0:
                continue
            H, D = layer.keys.shape[1], layer.keys.shape[3]
            g = idx.to(layer.keys.device)[:, None, :, None].expand(N, H, Cn, D)  # a sharded base: per layer
            layer.keys = layer.keys.gather(2, g)
            layer.values = layer.values.gather(2, g)

    def absorb(self, other: "PolicyGroup", seq_offset: int) -> None:
        """Append `other`'s rows (new sequences joining a running batch; their sequence numbers shift by
        `seq_offset`). Both groups must be between rounds (no open branches) and run the same model.

        The shorter cache is left-padded with holes: columns no row owns are never attended to, keys
        carry their rotary positions and every feed passes explicit positions, so where a row's columns
        sit does not matter (the same reason `_compact` may move them)."""
        if other.model is not self.model:
            raise ValueError("groups on different models cannot be joined")
        if not (self.ready and other.ready):
            raise RuntimeError("a group still being prefilled cannot be joined")
        if set(self.steer_deltas) != set(other.steer_deltas):
            raise ValueError("groups with different steering layers cannot be joined")
        C = self.layout.join(other.layout, seq_offset)
        ours, theirs = list(self.cache.layers), list(other.cache.layers)
        for i in range(max(len(ours), len(theirs))):
            a = ours[i] if i < len(ours) else None
            b = theirs[i] if i < len(theirs) else None
            filled = [x for x in (a, b) if _has_columns(x)]
            if not filled:
                continue
            like = filled[0].keys  # [N, H, c, D]
            parts_k, parts_v = [], []
            for layer, n in ((a, self.rows), (b, other.rows)):
                if _has_columns(layer):
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
        self.adapters += other.adapters
        if other.lora is not None:  # built after this group's, for a superset of the adapters in use
            self.lora = other.lora
        self._tails += other._tails
        self._tail_pos += other._tail_pos
        self.steer_deltas = {
            L: torch.cat([d, other.steer_deltas[L].to(d.device)]) for L, d in self.steer_deltas.items()
        }
        self.forward_passes += other.forward_passes

    def select(self, rows: torch.Tensor, row_seq: torch.Tensor) -> None:
        """Keep only `rows` (e.g. the rows of unfinished sequences), renumbering their sequences."""
        for layer in self.cache.layers:  # per layer: a sharded base keeps layers on several devices
            if _has_columns(layer):
                layer.batch_select_indices(rows.to(layer.keys.device))
        self.adapters = [self.adapters[int(i)] for i in rows]
        self._tails = [self._tails[int(i)] for i in rows]
        self._tail_pos = [self._tail_pos[int(i)] for i in rows]
        self.layout.take(rows, row_seq)
        self.steer_deltas = {L: d[rows.to(d.device)] for L, d in self.steer_deltas.items()}
        self._tidy()


def _has_columns(layer) -> bool:
    return layer is not None and getattr(layer, "keys", None) is not None and layer.keys.numel() > 0


class MultiPolicyScorer:
    """Scores every sequence's response under its own policies, one batched forward per model.

    `slots[b][p]` = (group, row in that group) of sequence b's policy p. Sequences may have different
    policies and different numbers of them (a batch of several personas); each group's rows stay in
    sequence order. `score_rows` returns every row's logits in one flat row order (group by group);
    `seq_rows()` says which of those rows are each sequence's.
    """

    def __init__(self, groups: list[PolicyGroup], slots: list[list[tuple[int, int]]], models: list[str]):
        self.groups, self.slots, self.models = groups, slots, models
        self.dropped_passes = 0  # forward passes of groups dropped when their last rows left

    @property
    def n_seqs(self) -> int:
        return len(self.slots)

    def offsets(self) -> list[int]:
        """The flat row index of each group's first row."""
        out, n = [], 0
        for g in self.groups:
            out.append(n)
            n += g.rows
        return out

    @property
    def ready(self) -> bool:
        return all(g.ready for g in self.groups)

    def prefill(self, budget: int | None = None) -> int:
        """Every group's `prefill`; returns the most columns one group fed."""
        return max((g.prefill(budget) for g in self.groups), default=0)

    def row_seqs(self) -> torch.Tensor:
        """[N] the sequence of every flat row."""
        return torch.cat([g.row_seq for g in self.groups])

    def seq_rows(self) -> list[list[int]]:
        """Per sequence, the flat row of each of its policies (in its policy order)."""
        off = self.offsets()
        return [[off[g] + r for g, r in slots] for slots in self.slots]

    def score_rows(
        self,
        ys: list[list[int]],
        chunks: torch.Tensor | None = None,
        support: tuple[torch.Tensor, float, torch.Tensor] | None = None,
        features: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Raw next-token logits [N, n, K+1, V] of every row before each chunk token and after it.

        ys: each sequence's accepted response; chunks: [B, n, K] drafted alternatives (None: K = 0, n = 1).
        support: (anchor rows [A], alpha, full rows [N] bool): rows marked full get logits over the whole
        vocabulary; every other row is exact on the tokens some anchor row finds plausible at that
        position and 0 elsewhere (needs `head_skippable`; see `_logits_on_support` for when that is all a
        target reads).
        features: also return every row's last hidden states there, [N, n, K+1, H] (needs
        `head_skippable`): what a draft head reads.
        """
        n, K = (1, 0) if chunks is None else chunks.shape[1:]
        hidden = support is not None or features
        feeds = [
            g.feed(ys, None if chunks is None else chunks[g.row_seq], hidden=hidden) for g in self.groups
        ]  # per group [N_g, 1 + n*K, V] (hidden: [N_g, 1 + n*K, H])
        states = feeds
        if support is not None:
            feeds = self._logits_on_support(feeds, *support)
        elif features:
            feeds = [g.head(h) for g, h in zip(self.groups, feeds)]
        logits = self._by_branch(feeds, n, K)
        return (logits, self._by_branch(states, n, K)) if features else logits

    def _by_branch(self, feeds: list[torch.Tensor], n: int, K: int) -> torch.Tensor:
        """Per group [N_g, 1 + n*K, D] -> [N, n, K+1, D]: column 0 (before any branch) in every branch."""
        outs = []
        for g, lg in zip(self.groups, feeds):
            first = lg[:, :1].unsqueeze(1).expand(-1, n, 1, -1)  # [N_g, n, 1, D]
            rest = lg[:, 1:].reshape(g.rows, n, K, lg.shape[-1])  # [N_g, n, K, D]
            outs.append(torch.cat([first, rest], 2))  # [N_g, n, K+1, D]
        if len(outs) == 1:
            return outs[0]
        return torch.cat([o.to(outs[0].device) for o in outs], 0)

    def next_logits(self, ys: list[list[int]]) -> torch.Tensor:
        """Feed every row's pending tokens: the next-token logits of each flat row, [N, V] (a drafter's
        step; `score_rows` is the scoring pass)."""
        outs = [g.feed(ys)[:, 0] for g in self.groups]  # [N_g, V] each
        return outs[0] if len(outs) == 1 else torch.cat([o.to(outs[0].device) for o in outs], 0)

    def score(
        self,
        ys: list[list[int]],
        chunks: torch.Tensor | None = None,
        support: tuple[int, float] | None = None,
    ) -> torch.Tensor:
        """`score_rows` by sequence: [B, P, n, K+1, V], for a scorer whose sequences all have P policies.
        support: (the anchor's policy index, alpha), as in `score_rows`."""
        rows = torch.tensor(self.seq_rows())  # [B, P]
        spec = None
        if support is not None:
            anchors = rows[:, support[0]]  # [B]
            full = torch.zeros(sum(g.rows for g in self.groups), dtype=torch.bool)
            full[anchors] = True
            spec = (anchors, support[1], full)
        lg = self.score_rows(ys, chunks, spec)  # [N, n, K+1, V]
        if rows.numel() == lg.shape[0] and torch.equal(rows.flatten(), torch.arange(lg.shape[0])):
            return lg.reshape(*rows.shape, *lg.shape[1:])
        return lg[rows.to(lg.device)]

    @property
    def head_skippable(self) -> bool:
        return all(g.head_skippable for g in self.groups)

    def _logits_on_support(
        self, hidden: list[torch.Tensor], anchors: torch.Tensor, alpha: float, full: torch.Tensor
    ) -> list[torch.Tensor]:
        """Per group, last hidden states [N_g, W, H] -> logits [N_g, W, V]: the rows marked `full` over the
        whole vocabulary, every other row only on the tokens some anchor row gives >= alpha / 2 x its top
        token's probability at some position of the feed (`aggregators.implausible`), 0 elsewhere.

        Why this is enough for a product target kept to its anchor's plausible set (plausibility
        alpha): the target never reads another policy outside that set, and a weighted sum of log-probs
        needs no normaliser: a row's log-softmax of this vector differs from its true log-probs by one
        constant on the set, which the target's own normalisation removes. So the output embedding
        runs in full for the anchors' rows only. Not for a mixture (its terms need true normalisers),
        for SCR's chunk weights (the same), nor for a guard wider than the anchor's (its set is read off
        the numerators' full distributions): `TargetBatch.support_rows` decides.
        The set is taken at alpha / 2 so that no rounding can leave out a token the target keeps.
        """
        off = self.offsets()
        owner = torch.cat([torch.full((g.rows,), gi) for gi, g in enumerate(self.groups)])  # [N] group of row
        full_logits = {}  # group -> (local rows [F_g], their logits over the vocabulary [F_g, W, V])
        for gi, g in enumerate(self.groups):
            rows = anchors[owner[anchors] == gi] - off[gi]  # [A_g] in row order
            if rows.numel():
                full_logits[gi] = (rows, g.head(hidden[gi][rows.to(hidden[gi].device)]))
        anchor_logits = torch.cat([lg.to(hidden[0].device) for _, lg in full_logits.values()], 0)  # [A, W, V]
        top = anchor_logits.amax(-1, keepdim=True)  # [A, W, 1]
        kept = (
            (~implausible(anchor_logits, top, alpha / 2)).reshape(-1, anchor_logits.shape[-1]).any(0)
        )  # [V]
        vocab = kept.nonzero().squeeze(1)  # [U]
        out = []
        for gi, (g, h) in enumerate(zip(self.groups, hidden)):
            head = g.head
            idx = vocab.to(head.weight.device)
            bias = None if head.bias is None else head.bias[idx]
            part = torch.nn.functional.linear(h.to(head.weight.device), head.weight[idx], bias)  # [N_g, W, U]
            lg = part.new_zeros(*part.shape[:-1], anchor_logits.shape[-1])  # [N_g, W, V]
            lg[..., idx] = part
            if gi in full_logits:
                rows, logits = full_logits[gi]
                lg[rows.to(lg.device)] = logits.to(lg.device)
            others = full[off[gi] : off[gi] + g.rows].clone()  # [N_g] rows wanting the whole vocabulary
            if gi in full_logits:
                others[full_logits[gi][0]] = False
            if bool(others.any()):
                rest = others.nonzero().squeeze(1)  # [F_g]
                lg[rest.to(lg.device)] = head(h[rest.to(h.device)]).to(lg.device)
            out.append(lg)
        return out

    # ---- sequences leaving and joining ---------------------------------------------------------
    def absorb(self, other: "MultiPolicyScorer") -> None:
        """Append `other`'s sequences after this scorer's (any policies: groups are matched by model)."""
        B = self.n_seqs
        remap = {}
        for gi, (name, g) in enumerate(zip(other.models, other.groups)):
            if name in self.models:
                mine = self.models.index(name)
                base_rows = self.groups[mine].rows
                self.groups[mine].absorb(g, B)
                remap[gi] = (mine, base_rows)
            else:
                g.layout.seq = g.layout.seq + B
                self.groups.append(g)
                self.models.append(name)
                remap[gi] = (len(self.groups) - 1, 0)
        for slots in other.slots:
            self.slots.append([(remap[gi][0], remap[gi][1] + r) for gi, r in slots])

    def commit(self, lengths: list[int], winners: list[int] | None = None) -> None:
        for g in self.groups:
            g.commit(lengths, winners)

    def select(self, keep: list[int]) -> None:
        """Keep sequences `keep` (old numbering), renumbered 0..len(keep)-1."""
        remap = {b: i for i, b in enumerate(keep)}
        new_index, kept = [], []  # per group: old row -> new row; the groups that still have rows
        for gi, g in enumerate(self.groups):
            rows = [i for i in range(g.rows) if int(g.row_seq[i]) in remap]
            new_index.append({r: j for j, r in enumerate(rows)})
            if rows:  # a model nobody uses any more leaves (its group and cache are dropped)
                rows_t = torch.tensor(rows, dtype=torch.long)
                g.select(rows_t, torch.tensor([remap[int(g.row_seq[i])] for i in rows], dtype=torch.long))
                kept.append(gi)
            else:
                self.dropped_passes += g.forward_passes
        position = {gi: j for j, gi in enumerate(kept)}
        self.groups = [self.groups[gi] for gi in kept]
        self.models = [self.models[gi] for gi in kept]
        self.slots = [[(position[gi], new_index[gi][r]) for gi, r in self.slots[b]] for b in keep]

    @property
    def forward_passes(self) -> int:
        return sum(g.forward_passes for g in self.groups) + self.dropped_passes
