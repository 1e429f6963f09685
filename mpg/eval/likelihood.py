"""Log-likelihood of given continuations under policies and under a composed target (teacher forcing).

Why: the questionnaire and the lm-eval plugin must *score* options ("Agree" / "Disagree", a multiple
choice answer) exactly as the samplers would *draw* them, so both modes below are the samplers' own
formulas (mpg.aggregators), applied to the option tokens instead of sampled ones:

- "token": sum_t log p_1(c_t | h, c_<t), p_1 = softmax(token_target_logits): what fused and speculative
  sample at T = 1, top_p = 1 (a normalised log-probability; lm-eval's perplexities are meaningful);
- "chunk": log p~(c | h) = log pi_0(c | h) + A_w(lam * l_1(c), ..., lam * l_n(c)) with the whole
  continuation as one chunk: what scr weighs. It is unnormalised, but its normaliser depends only on h,
  so it cancels when options after the same h are compared. For scr with chunk size k it is exactly
  p_k's comparison when every option has at most k tokens.

Sampling truncations are not part of either score, as in lm-eval (whose loglikelihood ignores
generation settings): neither top-p nor the target's plausibility constraint. A truncated target
gives a fixed option probability 0 whenever one of its tokens falls outside the anchor's plausible
set, so a forced choice between two such options would have no answer.

Each policy scores the continuation after its own context (SPEC section 1). Contexts are left-padded and
every model group runs one forward over its rows (policy contexts, with LoRA adapters chosen per row,
steering deltas per row), then one per option on the context's KV cache. Over many prompts
(`PolicyScorer`), each policy's shared context head is cached once. Which policies are distinct, their
contexts, their validation and the pad token come from the policy table (`mpg.policy_table`), as for
the samplers; the forward itself is an independent teacher-forcing path, not mpg.scoring's cache.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from ..aggregators import chunk_log_weights, token_target_logits
from ..policies import Policy, Target
from ..policy_table import PolicyTable, is_peft
from ..steering import row_deltas, steered
from ..tokens import pad_token_id

__all__ = [
    "MODES",
    "PolicyScorer",
    "continuation_ids",
    "option_scores",
    "policy_logprobs",
    "policy_token_logprobs",
    "target_loglik",
    "target_logliks",
    "target_policies",
    "token_mode",
    "chunk_mode",
]

MODES = ("token", "chunk")


# ---- inputs ------------------------------------------------------------------------------------
def continuation_ids(engine, text: str) -> list[int]:
    """Token ids of a continuation (the start of the assistant's response), without special tokens."""
    ids = engine.tokenizer(text, add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"empty continuation: {text!r} tokenises to nothing")
    return list(ids)


def target_policies(target: Target) -> list[Policy]:
    """The target's distinct policies: anchor, numerators, denominators (in that order)."""
    return target.policies()


def pad_options(options: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """options -> tokens [K, T] right-padded with `pad`, mask [K, T] (True on real tokens)."""
    if not options:
        raise ValueError("no continuations to score")
    if any(len(o) == 0 for o in options):
        raise ValueError("empty continuation: every option needs at least one token")
    T = max(len(o) for o in options)
    tokens = torch.full((len(options), T), pad, dtype=torch.long)
    mask = torch.zeros((len(options), T), dtype=torch.bool)
    for k, o in enumerate(options):
        tokens[k, : len(o)] = torch.tensor(o)
        mask[k, : len(o)] = True
    return tokens, mask


# ---- per-policy log-probs ----------------------------------------------------------------------
def _shared_head(contexts: list[list[int]]) -> int:
    """Length of the longest common token prefix of the contexts, leaving every context >= 1 own token."""
    n = min(len(c) for c in contexts) - 1
    for i in range(n):
        if any(c[i] != contexts[0][i] for c in contexts):
            return i
    return max(n, 0)


def _keep(cache: DynamicCache, n: int) -> None:
    """Roll the cache back to its first n positions."""
    extra = cache.get_seq_length() - n
    if extra > 0:
        cache.crop(-extra)


class _Group:
    """The policies on one model as rows of one batch. Their context heads (shared by every prompt) are
    cached once; each prompt forwards the rows' own tails, then each option, and is rolled back."""

    @torch.inference_mode()
    def __init__(self, engine, name: str, policies: list[Policy], contexts: list[list[list[int]]]):
        self.model = engine.models[name]
        self.device = next(self.model.parameters()).device
        self.contexts = contexts  # [R][prompt] -> ids
        self.pad = pad_token_id(engine.tokenizer)
        self.adapters = (
            {"adapter_names": [p.adapter or "__base__" for p in policies]} if is_peft(self.model) else {}
        )
        self.deltas = row_deltas(
            [p.steering for p in policies], engine.vectors, self.model.config.hidden_size, self.device
        )  # {layer: [R, H]}
        self.heads = [c[0][: _shared_head(c)] for c in contexts]
        ids, self.head_mask = self._left_pad(self.heads)  # [R, Lh] x2
        self.head_len = self.head_mask.sum(-1)  # [R]
        self.cache = DynamicCache()
        if ids.shape[1]:
            pos = (self.head_mask.cumsum(-1) - 1).clamp_min(0)  # [R, Lh]
            self._forward(ids, self.head_mask, pos, 1)

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        L = max(len(x) for x in seqs)
        ids = torch.full((len(seqs), L), self.pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), L), dtype=torch.long)
        for r, x in enumerate(seqs):
            if x:
                ids[r, L - len(x) :] = torch.tensor(x)
                mask[r, L - len(x) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _forward(self, ids, mask, pos, keep: int) -> torch.Tensor:
        """Append ids [R, n] to the cache; log-probs [R, keep, V] (float32) of the last `keep` positions."""
        with steered(self.model, self.deltas):
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                cache=self.cache,
                use_cache=True,
                logits_to_keep=keep,
                **self.adapters,
            )
        self.cache = out.cache
        return torch.log_softmax(out.logits[:, -keep:].float(), -1)

    @torch.inference_mode()
    def logprobs(self, i: int, options: list[list[int]], T: int) -> torch.Tensor:
        """[R, K, T, V] log-probs along each option after prompt i's contexts (0 past an option's end)."""
        R, head = len(self.heads), self.cache.get_seq_length()
        tail_ids, tail_mask = self._left_pad(
            [c[i][len(h) :] for c, h in zip(self.contexts, self.heads)]
        )  # [R, Lt]
        mask = torch.cat([self.head_mask, tail_mask], 1)  # [R, Lh + Lt]
        pos = self.head_len[:, None] + (tail_mask.cumsum(-1) - 1).clamp_min(0)  # [R, Lt]
        first = self._forward(tail_ids, mask, pos, 1)[:, 0]  # [R, V]
        end = pos[:, -1] + 1  # [R] position after the context
        ctx_len = self.cache.get_seq_length()
        out = torch.zeros((R, len(options), T, first.shape[-1]))  # [R, K, T, V]
        for k, option in enumerate(options):
            out[:, k, 0] = first.cpu()
            n = len(option) - 1
            if n:
                feed = torch.tensor(option[:-1], device=self.device).expand(R, -1)  # [R, n]
                fmask = torch.cat([mask, torch.ones((R, n), dtype=torch.long, device=self.device)], 1)
                fpos = end[:, None] + torch.arange(n, device=self.device)  # [R, n]
                out[:, k, 1 : n + 1] = self._forward(feed, fmask, fpos, n).cpu()
                _keep(self.cache, ctx_len)
        _keep(self.cache, head)
        return out


class PolicyScorer:
    """Log-probs of options under fixed policies, after each of several prompts.

    Why a class: in a questionnaire every policy's context is the same long head (system prompt, persona
    template, chat markup) around a short item. The head's KV cache is computed once per policy, and each
    prompt only forwards the policies' own tails and then the options (one forward per model group, rows =
    distinct policies), rolled back afterwards. `extra` tokens are appended to every context (response
    tokens already given)."""

    def __init__(self, engine, policies: list[Policy], prompts: list[str], *, extra: list[int] = ()):
        if not prompts:
            raise ValueError("no prompts to score after")
        self.engine = engine
        table = PolicyTable.for_policies(
            engine, policies, prompts, extra=extra
        )  # identical policies: one row
        self.row_of = table.row_of
        self.groups, self.where = [], [None] * len(table.policies)
        for name, members in table.by_model():
            for r, j in enumerate(members):
                self.where[j] = (len(self.groups), r)
            self.groups.append(
                _Group(
                    engine,
                    name,
                    [table.policies[j] for j in members],
                    [[list(c) for c in table.contexts[j]] for j in members],
                )
            )

    def logprobs(self, i: int, options: list[list[int]], *, full: bool = True):
        """After prompt i: lp [P, K, T, V] (full) or [P, K, T] (the option tokens' log-probs, 0 on padding),
        tokens [K, T] (options right-padded), mask [K, T] (True on real tokens)."""
        tokens, mask = pad_options(options, pad_token_id(self.engine.tokenizer))
        per_group = [g.logprobs(i, options, tokens.shape[1]) for g in self.groups]  # [R_g, K, T, V] each
        lp = torch.stack([per_group[self.where[j][0]][self.where[j][1]] for j in self.row_of])  # [P, K, T, V]
        if full:
            return lp, tokens, mask
        return gather_tokens(lp, tokens) * mask, tokens, mask


def policy_logprobs(
    engine,
    policies: list[Policy],
    prompt: str,
    options: list[list[int]],
    *,
    full: bool = True,
    prefix: list[int] = (),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every policy's log-probs along every option, each after the policy's context for `prompt`
    (+ `prefix`, response tokens already given). See PolicyScorer.logprobs for the shapes."""
    return PolicyScorer(engine, policies, [prompt], extra=prefix).logprobs(0, options, full=full)


def policy_token_logprobs(
    engine, policies: list[Policy], prompt: str, continuation: list[int]
) -> torch.Tensor:
    """log policy_i(c_t | context_i, c_<t) for one continuation: [P, T]."""
    lp, _, _ = policy_logprobs(engine, policies, prompt, [list(continuation)], full=False)
    return lp[:, 0]


# ---- the target (pure tensor functions) --------------------------------------------------------
def _split(target: Target, lp: torch.Tensor, index: dict, stack_dim: int):
    """anchor lp[index[anchor]], and the numerators / denominators stacked at `stack_dim`."""
    num = lp[[index[a.num] for a in target.attributes]].movedim(0, stack_dim)  # n = 0 for Target.single
    den = lp[[index[a.den] for a in target.attributes]].movedim(0, stack_dim)
    return lp[index[target.anchor]], num, den


def token_mode(
    target: Target, index: dict, lp: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log p_1 of the options and whether each token is p_1's argmax.

    lp:     [P, K, T, V] full log-probs, row index[policy] for each policy of the target
    tokens: [K, T], mask [K, T]
    returns (log p_1(c_t) [K, T], 0 on padding; greedy [K, T], True on padding)"""
    anchor, num, den = _split(target, lp, index, 2)  # [K,T,V], [K,T,n,V] x2
    w = torch.tensor(target.normalised_weights(), dtype=lp.dtype)  # [n]
    logits = token_target_logits(anchor, num, den, w, target.aggregator, target.lam)  # [K, T, V]
    logp = torch.log_softmax(logits, -1)  # [K, T, V]
    tok = logp.gather(-1, tokens[..., None]).squeeze(-1) * mask  # [K, T]
    greedy = (logits.argmax(-1) == tokens) | ~mask  # [K, T]
    return tok, greedy


def chunk_mode(target: Target, index: dict, tok_lp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log p~(c | h) with each whole option as one chunk (scr's weight with proposal = 1).

    tok_lp: [P, K, T] log-probs of the option tokens; mask [K, T]
    returns [K]"""
    g = tok_lp * mask  # [P, K, T]
    anchor, num, den = _split(target, g, index, 1)  # [K, T], [K, n, T] x2
    w = torch.tensor(target.normalised_weights(), dtype=g.dtype)  # [n]
    a = chunk_log_weights(
        anchor, num, den, torch.zeros_like(anchor), w, target.aggregator, target.lam
    )  # [K, T]
    return a[..., -1]


def gather_tokens(lp: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[P, K, T, V] full log-probs -> [P, K, T] log-probs of the option tokens."""
    P, (K, T) = lp.shape[0], tokens.shape
    return lp.gather(-1, tokens[None, :, :, None].expand(P, K, T, 1)).squeeze(-1)


def option_scores(
    target: Target, index: dict, lp: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores [K] of the options under the target in `mode`, and greedy [K] (every token is p_1's argmax).

    lp: [P, K, T, V] full log-probs (both modes); index: policy -> row of lp."""
    if mode not in MODES:
        raise ValueError(f"unknown likelihood mode {mode!r}; choose one of {', '.join(MODES)}")
    tok, greedy = token_mode(target, index, lp, tokens, mask)
    score = tok.sum(-1) if mode == "token" else chunk_mode(target, index, gather_tokens(lp, tokens), mask)
    return score, greedy.all(-1)


# ---- one call: options under a target ----------------------------------------------------------
def target_logliks(
    engine, target: Target, prompt: str, options: list[list[int]], mode: str = "token", *, block: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores [K] (float64) of the options under the target, and greedy flags [K].

    Options longer than `block` tokens are scored block by block (the earlier blocks become context),
    which bounds the [P, T, V] log-prob memory; both modes are sums over tokens, so nothing changes."""
    if mode not in MODES:
        raise ValueError(f"unknown likelihood mode {mode!r}; choose one of {', '.join(MODES)}")
    policies = target_policies(target)
    index = {p: i for i, p in enumerate(policies)}
    if not options or max(len(o) for o in options) <= block:
        lp, tokens, mask = policy_logprobs(engine, policies, prompt, options)
        score, greedy = option_scores(target, index, lp, tokens, mask, mode)
        return score.double(), greedy
    scores, greedies = [], []
    for option in options:
        toks, tok_lps, greedy = [], [], True
        for i in range(0, len(option), block):
            piece = option[i : i + block]
            lp, tokens, mask = policy_logprobs(engine, policies, prompt, [piece], prefix=option[:i])
            tok, g = token_mode(target, index, lp, tokens, mask)
            toks.append(tok)  # [1, t]
            tok_lps.append(gather_tokens(lp, tokens))  # [P, 1, t]
            greedy = greedy and bool(g.all())
        if mode == "token":
            scores.append(float(torch.cat(toks, -1).sum()))
        else:
            g = torch.cat(tok_lps, -1)  # [P, 1, T]
            scores.append(float(chunk_mode(target, index, g, torch.ones(g.shape[1:], dtype=torch.bool))[0]))
        greedies.append(greedy)
    return torch.tensor(scores, dtype=torch.float64), torch.tensor(greedies)


def target_loglik(
    engine, target: Target, prompt: str, continuation: list[int] | str, mode: str = "token"
) -> float:
    """Score of one continuation (ids, or text tokenised by `continuation_ids`) under the target."""
    ids = continuation_ids(engine, continuation) if isinstance(continuation, str) else list(continuation)
    if not ids:
        raise ValueError("empty continuation: nothing to score")
    return float(target_logliks(engine, target, prompt, [ids], mode)[0][0])
