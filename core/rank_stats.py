"""Agreement statistics for rankings (lists ordered by raters, ties allowed):
Kendall's tau-b between two rankings, Kendall's W among several, and
Krippendorff's alpha at the ordinal level. Pure functions, no Django."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import krippendorff
import numpy as np


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b of two rankings of the same items (aligned; lower is
    better, equal values are ties). 1 is the same order, -1 the reverse.
    ``None`` when either ranking ties every item (tau-b is 0/0 then) or
    fewer than 2 items are given."""
    if len(x) != len(y):
        raise ValueError("kendall_tau_b: the rankings must have the same length.")
    concordant = discordant = ties_x = ties_y = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx = x[i] - x[j]
            dy = y[i] - y[j]
            if dx == 0 and dy == 0:
                ties_x += 1
                ties_y += 1
            elif dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    pairs = n * (n - 1) // 2
    denominator = math.sqrt((pairs - ties_x) * (pairs - ties_y))
    if denominator == 0:
        return None
    return (concordant - discordant) / denominator


def midranks(ranks: Sequence[float]) -> list[float]:
    """Ranks as fractional ranks 1..n: tied items share the mean of the
    positions they occupy (``[1, 1, 3]`` and ``[1, 1, 2]`` give
    ``[1.5, 1.5, 3]``)."""
    order = sorted(range(len(ranks)), key=lambda i: ranks[i])
    out = [0.0] * len(ranks)
    at = 0
    while at < len(order):
        end = at
        while end + 1 < len(order) and ranks[order[end + 1]] == ranks[order[at]]:
            end += 1
        mean = (at + end) / 2 + 1
        for k in range(at, end + 1):
            out[order[k]] = mean
        at = end + 1
    return out


def kendall_w(rankings: Sequence[Sequence[float]]) -> float | None:
    """Kendall's coefficient of concordance W (with the correction for
    ties) of m rankings of the same n items (each aligned; lower is better).
    0 is no agreement, 1 complete agreement. ``None`` with fewer than 2
    rankings or 2 items, or when every ranking ties every item."""
    m = len(rankings)
    if m < 2:
        return None
    n = len(rankings[0])
    if n < 2 or any(len(r) != n for r in rankings):
        return None
    ranked = np.array([midranks(r) for r in rankings], dtype=float)
    totals = ranked.sum(axis=0)
    s = float(((totals - totals.mean()) ** 2).sum())
    tie_term = 0.0
    for r in rankings:
        _values, counts = np.unique(np.asarray(r, dtype=float), return_counts=True)
        tie_term += float((counts**3 - counts).sum())
    denominator = m * m * (n**3 - n) - m * tie_term
    if denominator <= 0:
        return None
    return 12 * s / denominator


def krippendorff_alpha_ordinal(
    units: Mapping[Hashable, Sequence[float | None]],
) -> float | None:
    """Krippendorff's alpha for ordinal values (ranks), by the
    ``krippendorff`` package. ``units`` maps each unit (here: one completion
    of one ranked comparison) to the ranks its raters gave it; ``None`` is
    missing. Units with fewer than 2 values are not pairable and ignored.
    ``None`` when fewer than 2 pairable values exist or every one is the
    same (no variation)."""
    present = [[v for v in values if v is not None] for values in units.values()]
    pairable = [values for values in present if len(values) >= 2]
    flat = sorted({v for values in pairable for v in values})
    if len(flat) < 2:
        return None
    column = {v: i for i, v in enumerate(flat)}
    counts = np.zeros((len(pairable), len(flat)), dtype=np.int64)
    for u, values in enumerate(pairable):
        for v in values:
            counts[u, column[v]] += 1
    return float(
        krippendorff.alpha(
            value_counts=counts,
            value_domain=flat,
            level_of_measurement="ordinal",
        )
    )
