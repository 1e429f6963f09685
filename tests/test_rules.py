"""The acceptance rules (mpg.samplers.rules) on cases whose answers are worked out by hand below."""

import math

import pytest
import torch

from mpg.samplers.rules import ScrRound, scr_judge_chunk, scr_round, speculative_sampling_rule


def logp(*rows):
    return torch.tensor(rows, dtype=torch.float64).log()


# ---- speculative sampling (Leviathan et al. 2023) -------------------------------------------------
# Vocabulary of 3. Drafted chunk [0, 1].
#   position 0: q = (.5, .25, .25), p = (.25, .5, .25): p/q of token 0 = 0.5
#   position 1: q = (.2, .6, .2),   p = (.2, .3, .5):   p/q of token 1 = 0.5;  max(0, p - q) = (0, 0, .3)
#   position 2 (bonus): p = (.1, .1, .8): cdf (.1, .2, 1.0)
Q = logp([0.5, 0.25, 0.25], [0.2, 0.6, 0.2])
P = logp([0.25, 0.5, 0.25], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8])
CHUNK = torch.tensor([0, 1])


def test_speculative_rejects_at_the_first_u_above_the_ratio_and_redraws_from_the_residual():
    # u0 = .4 < .5 accepts token 0; u1 = .7 >= .5 rejects token 1; the residual (0, 0, 1) gives token 2
    out, accepted = speculative_sampling_rule(P, Q, CHUNK, torch.tensor([0.4, 0.7, 0.01]), bonus=True)
    assert (out, accepted) == ([0, 2], 1)


def test_speculative_rejects_the_first_token_and_redraws_position_zero():
    # u0 = .6 >= .5 rejects at once; residual at 0: max(0, p - q) = (0, .25, 0) -> token 1, whatever u
    out, accepted = speculative_sampling_rule(P, Q, CHUNK, torch.tensor([0.6, 0.1, 0.99]), bonus=True)
    assert (out, accepted) == ([1], 0)


@pytest.mark.parametrize("u_last,bonus_token", [(0.05, 0), (0.15, 1), (0.5, 2)])
def test_speculative_accepts_all_then_draws_the_bonus_by_inverse_cdf(u_last, bonus_token):
    # u0 = .3 < .5 and u1 = .2 < .5: both accepted; the bonus is the first index with cdf > u
    out, accepted = speculative_sampling_rule(P, Q, CHUNK, torch.tensor([0.3, 0.2, u_last]), bonus=True)
    assert (out, accepted) == ([0, 1, bonus_token], 2)


def test_speculative_no_bonus_after_eos_or_budget():
    out, accepted = speculative_sampling_rule(P, Q, CHUNK, torch.tensor([0.3, 0.2, 0.5]), bonus=False)
    assert (out, accepted) == ([0, 1], 2)


def test_speculative_ratio_above_one_always_accepts():
    # p/q of token 2 at position 0 is .5/.25 = 2 > 1: even u = .999 accepts
    p = logp([0.25, 0.25, 0.5], [0.1, 0.1, 0.8])
    out, accepted = speculative_sampling_rule(
        p, logp([0.5, 0.25, 0.25]), torch.tensor([2]), torch.tensor([0.999, 0.5]), bonus=True
    )
    assert (out, accepted) == ([2, 2], 1)


# ---- SCR: one chunk --------------------------------------------------------------------------------
LOG_HALF = math.log(0.5)  # -0.693


def test_scr_chunk_accepted_whole():
    # a - log M = (-.5, -.3): log u = -.693 passes both, so the whole chunk; no a_t above its bound
    assert scr_judge_chunk(
        torch.tensor([0.0, 0.2]), torch.tensor([0.5, 0.5]), torch.tensor(LOG_HALF), True
    ) == (2, False)


def test_scr_salvages_the_longest_passing_prefix():
    # a - log M = (0, -.5, -2): log u = -.693 passes t=1, 2 but not 3 -> keep 2 tokens with salvage, 0 without
    a, m = torch.tensor([1.0, 0.5, -1.0]), torch.tensor([1.0, 1.0, 1.0])
    assert scr_judge_chunk(a, m, torch.tensor(LOG_HALF), True) == (2, False)
    assert scr_judge_chunk(a, m, torch.tensor(LOG_HALF), False) == (0, False)


def test_scr_clip_counts_only_bounds_the_decision_used():
    # a_1 = 2 > log M_1 = 1 is a clip when salvage looks at every prefix; without salvage only a_2 = 0 counts
    a, m, log_u = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0]), torch.tensor(math.log(0.9))
    assert scr_judge_chunk(a, m, log_u, True) == (1, True)  # a - m = (1, -1): t=1 passes, t=2 not
    assert scr_judge_chunk(a, m, log_u, False) == (0, False)


# ---- SCR: one round of candidates ------------------------------------------------------------------
def one(x):
    return torch.tensor([x])


def test_scr_round_takes_the_first_candidate_that_keeps_tokens():
    # candidate 1: -.693 <= -3 fails (one token, nothing to salvage); candidate 2: -.693 <= 0 passes
    r = scr_round(
        [one(-3.0), one(0.0), one(0.0)],
        [one(0.0)] * 3,
        torch.full((3,), LOG_HALF),
        salvage=True,
        empty_rounds=5,
        max_rejections=16,
    )
    assert r == ScrRound(winner=2, kept=1, judged=2, rejections=1, clips=0, fallback=False, empty_rounds=0)


def test_scr_round_counts_empty_candidates_across_rounds():
    r = scr_round(
        [one(-3.0), one(-4.0)],
        [one(0.0)] * 2,
        torch.full((2,), LOG_HALF),
        salvage=True,
        empty_rounds=1,
        max_rejections=16,
    )
    assert r == ScrRound(winner=0, kept=0, judged=2, rejections=2, clips=0, fallback=False, empty_rounds=3)


def test_scr_round_falls_back_at_max_rejections_and_resets():
    # two empty candidates before; this one makes three = max_rejections: fallback, counter reset,
    # and the remaining candidate is never judged
    r = scr_round(
        [one(-3.0), one(0.0)],
        [one(0.0)] * 2,
        torch.full((2,), LOG_HALF),
        salvage=True,
        empty_rounds=2,
        max_rejections=3,
    )
    assert r == ScrRound(winner=0, kept=0, judged=1, rejections=1, clips=0, fallback=True, empty_rounds=0)


def test_scr_round_reports_clips_of_every_judged_candidate():
    # candidate 1: a = 2 > log M = 1 but log u = log .05 = -3.0 > a - M... no: -3.0 <= 1 passes -> kept, clip
    r = scr_round(
        [one(2.0)],
        [one(1.0)],
        torch.tensor([math.log(0.05)]),
        salvage=False,
        empty_rounds=0,
        max_rejections=16,
    )
    assert r == ScrRound(winner=1, kept=1, judged=1, rejections=0, clips=1, fallback=False, empty_rounds=0)


@pytest.mark.parametrize("q,want", [(1.0, 9.0), (0.9, 8.0), (0.7, 6.0), (0.5, 4.0), (0.25, 2.0), (0.05, 0.0)])
def test_window_bound_quantile_is_nearest_rank(q, want):
    """log M_t = the window's nearest-rank q-quantile (+ margin); q = 1 is the maximum (SCR's default)."""
    from mpg.samplers.thresholds import WindowBound

    bound = WindowBound(window=32, margin=0.5, quantile=q)
    for v in range(10):  # prefix length 1 sees 0..9 (in a shuffled order: the rank, not the order, counts)
        bound.observe(torch.tensor([float((v * 7) % 10)]))
    got = bound.log_bounds(torch.tensor([100.0, 3.0]))  # t = 2 has no history: its own a_t
    assert got.tolist() == [want + 0.5, 3.5]


@pytest.mark.parametrize("q", [0, 1.5, -0.1, True, "0.9"])
def test_sampler_config_rejects_a_bad_quantile(q):
    from mpg.samplers import ScrConfig

    with pytest.raises(ValueError, match="quantile"):
        ScrConfig(quantile=q).validate()
