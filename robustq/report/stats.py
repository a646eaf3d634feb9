"""Statistics of a few seeds: mean +- std, and a verdict from paired differences.

A comparison "a vs b" pairs the runs of the two settings by seed (same seed: same data split,
same held-out images, same initial weights where the architectures agree) and looks at the
differences d_s = a_s - b_s, in percentage points. With m their mean and SE = sd / sqrt(n):

* ``greater`` (a beats b): **holds** if m > 2 SE and every d_s > 0; **does not hold** if
  m < -2 SE and every d_s < 0 (b beats a); **inconclusive** otherwise, or with fewer than 2 pairs.
* ``similar`` (a about equals b, within ``tol`` points): **holds** if |m| + 2 SE <= tol;
  **does not hold** if |m| - 2 SE > tol; **inconclusive** otherwise.

A ``greater`` comparison whose metric has one and the same value in every run of both settings
(say a channel sparsity of 0 everywhere) is inconclusive and is marked as having no signal: the
budget did not move that metric, so the data say nothing about the claim either way.

This is a rough rule, not a significance test: with n = 3 seeds, m = 2 SE is a t statistic of 2
on 2 degrees of freedom (two-sided p ~ 0.18); requiring every pair to agree in sign is what
makes "holds" meaningful at that n. A claim holds if every comparison that was run holds, does
not hold if any comparison does not hold, and is inconclusive otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

HOLDS, FAILS, INCONCLUSIVE, NOT_RUN = "holds", "does not hold", "inconclusive", "not run"

RULE = __doc__.split("\n\n", 1)[1].strip()   # the rule, as the report prints it


def mean_std(values: list[float]) -> tuple[float, float, int]:
    """(mean, sample std (0 for one value), n)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, sd, n


@dataclass
class Paired:
    seeds: list
    diffs: list[float]        # percentage points, a - b
    mean: float
    se: float
    verdict: str
    constant: Optional[float] = None   # the one value of every run of a and b (no signal)


def paired(a: dict, b: dict, test: str = "greater", tol: float = 0.0) -> Paired:
    """``a``, ``b``: seed -> value (fractions); the verdict of the rule above."""
    seeds = sorted(set(a) & set(b), key=str)
    diffs = [100.0 * (a[s] - b[s]) for s in seeds]
    n = len(diffs)
    if n == 0:
        return Paired([], [], math.nan, math.nan, NOT_RUN)
    m, sd, _ = mean_std(diffs)
    se = sd / math.sqrt(n) if n > 1 else math.nan
    if n < 2:
        return Paired(seeds, diffs, m, se, INCONCLUSIVE)
    values = {a[s] for s in seeds} | {b[s] for s in seeds}
    if test == "greater" and len(values) == 1:
        return Paired(seeds, diffs, m, se, INCONCLUSIVE, constant=values.pop())
    return Paired(seeds, diffs, m, se, _verdict(diffs, m, se, test, tol))


def _verdict(diffs: list[float], m: float, se: float, test: str, tol: float) -> str:
    if test == "greater":
        if m > 2 * se and all(d > 0 for d in diffs):
            return HOLDS
        if m < -2 * se and all(d < 0 for d in diffs):
            return FAILS
        return INCONCLUSIVE
    if test == "similar":
        if abs(m) + 2 * se <= tol:
            return HOLDS
        if abs(m) - 2 * se > tol:
            return FAILS
        return INCONCLUSIVE
    raise ValueError(f"unknown test {test!r}")


def combine(verdicts: list[str]) -> str:
    """A claim's verdict from its comparisons' (those not run are left out)."""
    run = [v for v in verdicts if v != NOT_RUN]
    if not run:
        return NOT_RUN
    if FAILS in run:
        return FAILS
    return HOLDS if all(v == HOLDS for v in run) else INCONCLUSIVE
