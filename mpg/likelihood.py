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

Each policy scores the continuation after its own context (SPEC section 1). The forward is the
samplers' own (`mpg.scoring`): rows are (prompt, policy) pairs of one scorer, each policy's context head
comes from the engine's head cache, and the options are fed as branches after the context, so one
forward per model scores every option of several prompts. Which policies are distinct and their
contexts come from the policy table (`mpg.policy_table`), as for the samplers.
"""

from __future__ import annotations

import torch

from .aggregators import chunk_log_weights, token_target_logits
from .chat import HEAD_PROBE, common_prefix
from .policies import Policy, Target
from .policy_table import PolicyTable
from .tokens import pad_token_id

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
class PolicyScorer:
    """Log-probs of options under fixed policies, after each of several prompts.

    Why a class: in a questionnaire every policy's context is the same long head (system prompt, persona
    template, chat markup) around a short item. The head's keys and values are computed once (the
    engine's head cache) and each call forwards only the prompts' tails and their options. `extra`
    tokens are appended to every context (response tokens already given)."""

    def __init__(self, engine, policies: list[Policy], prompts: list, *, extra: list[int] = ()):
        if not prompts:
            raise ValueError("no prompts to score after")
        engine.check_policies(policies)
        self.engine = engine
        self.table = PolicyTable.for_policies(engine.chat, policies, prompts, extra=extra)
        self.row_of = self.table.row_of  # asked policy -> distinct row

    def tail_widths(self) -> list[int]:
        """Per prompt, its longest tail over the policies: the context tokens after the policy's own head
        (what a forward feeds besides cached heads)."""
        chat = self.engine.chat
        heads = [
            common_prefix(chat.render(p, HEAD_PROBE), ctx[0])
            for p, ctx in zip(self.table.policies, self.table.contexts)
        ]
        return [
            max(len(ctx[i]) - min(h, len(ctx[i]) - 1) for ctx, h in zip(self.table.contexts, heads))
            for i in range(self.table.n_prompts)
        ]

    @torch.inference_mode()
    def logprobs_many(self, prompts: list[int], options: list[list[list[int]]]) -> list[torch.Tensor]:
        """For each prompt index i and its options: lp [P, K_i, T_i, V] (float32, on the CPU, 0 past an
        option's end), P the policies asked for. One scorer forward per model for all of them."""
        pad = pad_token_id(self.engine.tokenizer)
        padded = [pad_options(o, pad) for o in options]  # ([K_i, T_i], mask) each
        K = max(t.shape[0] for t, _ in padded)
        T = max(t.shape[1] for t, _ in padded)
        chunks = torch.full((len(prompts), K, T), pad, dtype=torch.long)  # [B, K, T]
        for b, (t, _) in enumerate(padded):
            chunks[b, : t.shape[0], : t.shape[1]] = t
        scorer = self.engine.build_scorer_rows([self.table.sequence(i) for i in prompts])
        logits = scorer.score([[] for _ in prompts], chunks)  # [B, P_distinct, K, T+1, V]
        out = []
        rows = list(self.row_of)
        for b, (t, mask) in enumerate(padded):
            k, n = t.shape
            lp = torch.log_softmax(logits[b, rows, :k, :n].float(), -1).cpu()  # [P, k, n, V]
            out.append(lp * mask[None, :, :, None])
        return out

    def logprobs(self, i: int, options: list[list[int]], *, full: bool = True):
        """After prompt i: lp [P, K, T, V] (full) or [P, K, T] (the option tokens' log-probs, 0 on padding),
        tokens [K, T] (options right-padded), mask [K, T] (True on real tokens)."""
        tokens, mask = pad_options(options, pad_token_id(self.engine.tokenizer))
        (lp,) = self.logprobs_many([i], [options])  # [P, K, T, V]
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
