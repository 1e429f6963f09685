"""Small statistics shared by training, the judges and the benchmarks: 95% confidence intervals.

- shares (a proportion of n items): the Wilson score interval, which stays inside [0, 1] and behaves
  at p = 0 or 1 and small n, where the normal approximation does not: `wilson_interval`, and the two
  record shapes built on it, `accuracy_ci` (from counts) and `proportion` (from flags);
- means: the Student-t interval, `mean_ci` (with `t_quantile_975`), and `bounded_mean_ci`, which clips
  it to the range a bounded score cannot leave (a t interval over few values can overshoot it);
- paired differences (two methods on the same items): `paired_bootstrap_ci`, a percentile bootstrap
  over items of the mean difference.

Pure functions of plain numbers; nothing here imports torch.
"""

from __future__ import annotations

import math

__all__ = [
    "accuracy_ci",
    "bounded_mean_ci",
    "mean_ci",
    "paired_bootstrap_ci",
    "proportion",
    "t_quantile_975",
    "wilson_interval",
]


# ---- proportions ------------------------------------------------------------------------------
def wilson_interval(p: float, n: int, z: float = 1.96) -> list[float]:
    """Wilson score interval [lo, hi] (95% at z = 1.96) for a proportion p measured on n items, rounded
    to 4 places; [0.0, 1.0] when n = 0 (nothing measured: every share is possible)."""
    if n == 0:
        return [0.0, 1.0]
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def accuracy_ci(right: int, n: int) -> dict:
    """{accuracy: right / n (0.0 when n = 0), ci95: its Wilson interval, n}."""
    acc = right / n if n else 0.0
    return {"accuracy": acc, "ci95": wilson_interval(acc, n), "n": n}


def proportion(flags: list[bool]) -> dict:
    """Share of true flags with its 95% Wilson interval: {mean, lo, hi, n} (None when n = 0)."""
    n = len(flags)
    if n == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    p = sum(bool(f) for f in flags) / n
    lo, hi = wilson_interval(p, n)
    return {"mean": p, "lo": lo, "hi": hi, "n": n}


# ---- means ------------------------------------------------------------------------------------
_T975_SMALL = {1: 12.706, 2: 4.303, 3: 3.182}  # where the series below is off by more than 1e-3


def t_quantile_975(df: int) -> float:
    """0.975 quantile of Student's t with df degrees of freedom (exact table for df <= 3, else
    Abramowitz & Stegun 26.7.5, error < 1e-3)."""
    if df in _T975_SMALL:
        return _T975_SMALL[df]
    x = 1.959963984540054
    g1 = (x**3 + x) / 4
    g2 = (5 * x**5 + 16 * x**3 + 3 * x) / 96
    g3 = (3 * x**7 + 19 * x**5 + 17 * x**3 - 15 * x) / 384
    g4 = (79 * x**9 + 776 * x**7 + 1482 * x**5 - 1920 * x**3 - 945 * x) / 92160
    return x + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def mean_ci(values: list[float]) -> dict:
    """Mean and 95% Student-t confidence interval over the finite values: {mean, lo, hi, n} (None if n = 0;
    lo = hi = mean if n = 1). None and nan values are left out."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(xs)
    if n == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    mean = sum(xs) / n
    if n == 1:
        return {"mean": mean, "lo": mean, "hi": mean, "n": 1}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n}


def bounded_mean_ci(values: list[float], lo: float = 0.0, hi: float = 1.0) -> dict:
    """`mean_ci` with the interval clipped to [lo, hi], the range the score cannot leave."""
    ci = mean_ci(values)
    if ci["mean"] is not None:
        ci["lo"], ci["hi"] = max(ci["lo"], lo), min(ci["hi"], hi)
    return ci


def paired_bootstrap_ci(a: list[float], b: list[float], reps: int = 2000, seed: int = 0) -> dict:
    """Mean of a_i - b_i over paired items and its 95% percentile-bootstrap interval (items resampled
    with replacement, `reps` times, seeded): {mean, lo, hi, n, relative}; relative = mean / mean(b)."""
    import random

    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    d = [float(x) - float(y) for x, y in zip(a, b)]
    n = len(d)
    if n == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0, "relative": None}
    rng = random.Random(seed)
    means = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(reps))
    base = sum(b) / n
    mean = sum(d) / n
    return {
        "mean": mean,
        "lo": means[int(0.025 * reps)],
        "hi": means[min(reps - 1, int(0.975 * reps))],
        "n": n,
        "relative": mean / base if base else None,
    }
