"""Statistics for the evaluation: rank AUC, percentile bootstrap intervals, and McNemar's paired test.

Pure Python and numpy (no scipy): the chi-square(1) tail is ``erfc(sqrt(x / 2))`` and the exact
binomial tail is summed with integer binomial coefficients.

- :func:`mann_whitney_auc`: the probability that a random positive scores above a random negative,
  ties counted half; equal to the Mann-Whitney U statistic divided by ``n_pos * n_neg``
  (Mann and Whitney 1947; Hanley and McNeil 1982 for U as the ROC area).
- :func:`bootstrap_ci`: percentile bootstrap over questions (Efron and Tibshirani 1993, ch. 13):
  resample the questions with replacement ``n`` times, recompute the metric, and take the
  ``alpha/2`` and ``1 - alpha/2`` quantiles of the recomputed values.
- :func:`paired_bootstrap_diff`: the same resamples applied to two models' outcomes on the same
  questions, giving an interval for ``after - before``.
- :func:`mcnemar`: McNemar (1947) on paired yes/no outcomes of the same questions before and after.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from halluguard.errors import HalluguardError
from halluguard.evaluation.outcomes import Outcome, OutcomeTable, build_table, pair_runs

Statistic = Callable[..., "float | None"]

# Below this many discordant pairs McNemar uses the exact binomial test (the chi-square
# approximation is poor for small counts); the usual textbook threshold.
EXACT_BELOW = 25

# An interval drawn from fewer resamples than this share (the rest had the metric undefined,
# e.g. a resample without OOK questions) would describe a different population: report none.
MIN_DEFINED_SHARE = 0.5


def mann_whitney_auc(scores: Sequence[float], positives: Sequence[bool]) -> float | None:
    """ROC AUC of ``scores`` for the ``positives`` label, ties counted half; None if a class is empty."""
    scores = np.asarray(scores, dtype=float)
    positives = np.asarray(positives, dtype=bool)
    if scores.shape != positives.shape:
        raise HalluguardError(f"AUC needs one label per score, got {scores.size} scores and {positives.size} labels")
    n_pos = int(positives.sum())
    n_neg = positives.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = _average_ranks(scores)[positives].sum()
    u_statistic = rank_sum - n_pos * (n_pos + 1) / 2
    return float(u_statistic / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    first = np.flatnonzero(starts)
    counts = np.diff(np.r_[first, values.size])
    mean_rank = first + (counts + 1) / 2
    ranks = np.empty(values.size, dtype=float)
    ranks[order] = mean_rank[np.cumsum(starts) - 1]
    return ranks


def mcnemar(before: Sequence[bool], after: Sequence[bool]) -> dict:
    """McNemar's test that a yes/no property changed between two runs on the same questions.

    ``b`` counts questions that were True before and False after, ``c`` the reverse; the
    concordant ones carry no information. With ``b + c < 25`` the two-sided exact binomial test
    (``min(1, 2 * P(X <= min(b, c)))``, X ~ Binomial(b + c, 1/2)) is used and ``statistic`` is
    ``min(b, c)``; otherwise the continuity-corrected chi-square ``(|b - c| - 1)^2 / (b + c)``
    with one degree of freedom. Returns ``{"b", "c", "statistic", "p_value", "method"}``.
    """
    before, after = list(before), list(after)
    if len(before) != len(after):
        raise HalluguardError(f"McNemar needs the same questions before and after, got {len(before)} "
                              f"and {len(after)} values")
    if not all(isinstance(v, (bool, np.bool_)) for v in before + after):
        raise HalluguardError("McNemar needs True/False values before and after")
    b = sum(1 for x, y in zip(before, after, strict=True) if x and not y)
    c = sum(1 for x, y in zip(before, after, strict=True) if not x and y)
    discordant = b + c
    if discordant < EXACT_BELOW:
        smaller = min(b, c)
        tail = sum(math.comb(discordant, k) for k in range(smaller + 1))
        return {"b": b, "c": c, "statistic": float(smaller),
                "p_value": min(1.0, 2 * tail / 2 ** discordant), "method": "exact binomial"}
    statistic = max(0, abs(b - c) - 1) ** 2 / discordant
    return {"b": b, "c": c, "statistic": statistic, "p_value": math.erfc(math.sqrt(statistic / 2)),
            "method": "chi-square with continuity correction"}


def bootstrap_ci(outcomes: Sequence[Outcome], metric, n: int = 1000, seed: int = 0, alpha: float = 0.05,
                 reference: Sequence[Outcome] | None = None) -> tuple[float, float] | None:
    """Percentile bootstrap interval of one metric (a registered name or Metric) over questions.

    The same ``seed`` gives the same interval. Resamples on which the metric is undefined are
    skipped; None when the metric is undefined on more than half of them (or on all).
    """
    from halluguard.evaluation.metrics import get_metric  # metrics imports this module

    chosen = get_metric(metric)
    table = build_table(outcomes, reference)
    return bootstrap_intervals((table,), {chosen.name: chosen.value}, n=n, seed=seed, alpha=alpha)[chosen.name]


def paired_bootstrap_diff(before: Sequence[Outcome], after: Sequence[Outcome], metric, n: int = 1000,
                          seed: int = 0, alpha: float = 0.05,
                          reference: Sequence[Outcome] | None = None) -> dict:
    """``after - before`` for one metric on the same questions, with a paired percentile interval.

    Both models are resampled at the same questions, so question difficulty cancels out.
    Returns ``{"before", "after", "diff", "ci"}``; a value is None where the metric is undefined.
    """
    from halluguard.evaluation.metrics import get_metric

    chosen = get_metric(metric)
    before, after = pair_runs(before, after)
    tables = (build_table(before, reference), build_table(after, reference))
    before_value, after_value = chosen.value(tables[0]), chosen.value(tables[1])
    ci = bootstrap_intervals(tables, {chosen.name: lambda b, a: difference(chosen.value(b), chosen.value(a))},
                             n=n, seed=seed, alpha=alpha)[chosen.name]
    return {"before": before_value, "after": after_value,
            "diff": difference(before_value, after_value), "ci": ci}


def difference(before: float | None, after: float | None) -> float | None:
    """``after - before``, or None when either is undefined."""
    return None if before is None or after is None else after - before


def bootstrap_intervals(tables: Sequence[OutcomeTable], statistics: Mapping[str, Statistic], n: int = 1000,
                        seed: int = 0, alpha: float = 0.05) -> dict[str, tuple[float, float] | None]:
    """Percentile intervals of several statistics from one shared set of question resamples.

    ``tables`` are aligned row by row (the same questions) and resampled at the same rows; each
    statistic takes the resampled tables as positional arguments. Computing every statistic on
    the same resamples is what makes one seed give the same interval whichever way it is asked for.
    """
    if not isinstance(n, int) or n < 1:
        raise HalluguardError(f"the bootstrap needs a positive number of resamples, got {n!r}")
    if not 0 < alpha < 1:
        raise HalluguardError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")
    draws: dict[str, list[float]] = {name: [] for name in statistics}
    for sample in _resamples(tables, n, seed):
        for name, statistic in statistics.items():
            value = statistic(*sample)
            if value is not None:
                draws[name].append(value)
    return {name: _percentile_interval(values, n, alpha) for name, values in draws.items()}


def _resamples(tables: Sequence[OutcomeTable], n: int, seed: int) -> Iterator[tuple[OutcomeTable, ...]]:
    size = len(tables[0])
    if any(len(t) != size for t in tables):
        raise HalluguardError("paired bootstrap tables must hold the same questions")
    if size == 0:
        return
    rng = np.random.default_rng(seed)
    for _ in range(n):
        rows = rng.integers(0, size, size)
        yield tuple(t.take(rows) for t in tables)


def _percentile_interval(values: list[float], n: int, alpha: float) -> tuple[float, float] | None:
    if not values or len(values) < MIN_DEFINED_SHARE * n:
        return None
    low, high = np.quantile(np.asarray(values, dtype=float), [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)
