"""Statistics for preference data and annotator agreement, on numpy and scipy.

Importable by web processes (numpy, scipy and ``krippendorff`` only; no torch),
but pages never call the resampling functions here: leaderboards and quality
reports are computed by the ``models_hub.reports_refresh`` task and cached
(:mod:`core.reports`). Everything is deterministic given its ``seed``.

Contents:

* :func:`wilson_interval` - score interval for a binomial proportion.
* :class:`Outcome`, :func:`bradley_terry`, :func:`bootstrap_bradley_terry` -
  strengths of model versions from pairwise human judgements.
* :class:`WinRate`, :func:`win_rate`, :func:`win_rates`,
  :func:`win_rate_matrix` - head-to-head win rates.
* :func:`cohen_kappa`, :func:`krippendorff_alpha_nominal` - inter-rater
  agreement.
* :func:`left_pick_rate`, :func:`is_position_biased` - position bias of an
  annotator who is shown two responses side by side.

Where the numbers come from (the reasons are in docs/DESIGN.md, "Statistics"):

* Bradley-Terry is a maximum a posteriori fit by ``scipy.optimize.minimize``
  (``trust-exact``: Newton steps with the analytic gradient and Hessian of the
  log-likelihood); whether a plain MLE exists is decided by
  ``scipy.sparse.csgraph.connected_components``.
* Bootstraps draw from ``numpy.random.Generator``. Outcomes are i.i.d. and a
  statistic here depends only on how often each distinct outcome occurs, so a
  resample of n outcomes with replacement is drawn as one multinomial vector
  of counts over the distinct outcomes (exactly the distribution of counting
  n resampled indices), all resamples at once: O(n_boot x distinct outcomes)
  instead of O(n_boot x n).
* Krippendorff's alpha comes from the ``krippendorff`` package; Cohen's kappa
  is the usual formula over a numpy confusion matrix (scikit-learn's
  ``cohen_kappa_score`` computes the same thing but would bring scikit-learn,
  joblib and threadpoolctl into every web process for five lines).
* The Wilson interval is its closed form: ``scipy.stats.binomtest`` only
  takes whole successes and we count ties as half a success.

Conventions: an outcome's ``result`` is the score of ``a`` against ``b``:
1.0 = ``a`` won, 0.0 = ``b`` won, 0.5 = tie (any value in [0, 1] is accepted
and counts as a fractional win each way). Bradley-Terry strengths are
natural-log strengths: P(i beats j) = 1 / (1 + exp(-(s_i - s_j))). Multiply by
``ELO_PER_LOG_STRENGTH`` (400 / ln 10, about 173.7) for an Elo-like scale.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import NamedTuple

import krippendorff
import numpy as np
from numpy.typing import NDArray
from scipy import optimize
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components
from scipy.special import expit, log_expit

__all__ = [
    "ELO_PER_LOG_STRENGTH",
    "NO_WIN_RATE",
    "Outcome",
    "WinRate",
    "bootstrap_bradley_terry",
    "bradley_terry",
    "cohen_kappa",
    "is_position_biased",
    "krippendorff_alpha_nominal",
    "left_pick_rate",
    "win_rate",
    "win_rate_matrix",
    "win_rates",
    "wilson_interval",
]

logger = logging.getLogger(__name__)

#: Multiply a natural-log strength (difference) by this to get Elo points.
ELO_PER_LOG_STRENGTH = 400.0 / math.log(10.0)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


# --------------------------------------------------------------------------
# Binomial proportions
# --------------------------------------------------------------------------


def wilson_interval(successes: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval ``(lower, upper)`` for the proportion ``successes / n``.

    ``successes`` may be fractional (e.g. ties counted as half a success).
    ``z`` is the normal quantile (1.96 gives a ~95% interval). Both bounds lie
    in [0, 1]. ``n == 0`` returns ``(0.0, 1.0)`` (no information).

    Raises ``ValueError`` unless ``0 <= successes <= n`` and ``z >= 0``.
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if z < 0:
        raise ValueError(f"z must be non-negative, got {z}")
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = (z / denom) * math.sqrt(max(p * (1.0 - p) / n + z2 / (4.0 * n * n), 0.0))
    return (max(0.0, centre - half), min(1.0, centre + half))


# --------------------------------------------------------------------------
# Pairwise outcomes
# --------------------------------------------------------------------------


class Outcome(NamedTuple):
    """One pairwise human judgement between model versions ``a`` and ``b``.

    ``result`` is ``a``'s score: 1.0 = ``a`` won, 0.0 = ``b`` won, 0.5 = tie.
    Plain ``(a, b, result)`` tuples are accepted wherever an ``Outcome`` is.
    """

    a: str
    b: str
    result: float


class _Cells(NamedTuple):
    """Outcomes reduced to distinct cells ``(lo, hi, score)`` with counts.

    ``lo < hi`` index ``players``; ``score`` is ``lo``'s score. ``pair`` maps
    each cell to its row in ``pair_lo``/``pair_hi`` (the distinct pairs).
    """

    players: list[str]
    lo: IntArray
    hi: IntArray
    score: FloatArray
    count: NDArray[np.int64]
    pair: IntArray
    pair_lo: IntArray
    pair_hi: IntArray

    @property
    def n(self) -> int:
        return int(self.count.sum())


def _parse(
    outcomes: Iterable[Sequence[object]],
) -> tuple[list[str], IntArray, IntArray, FloatArray]:
    """Validated ``(players, a_index, b_index, a_score)``; players sorted."""
    rows = [tuple(o) for o in outcomes]
    try:
        scores = np.array([float(r[2]) for r in rows], dtype=np.float64)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"result must be a number in [0, 1]: {exc}") from exc
    bad = ~((scores >= 0.0) & (scores <= 1.0))
    if bad.any():
        raise ValueError(f"result must be in [0, 1], got {scores[bad][0]!r}")
    players = sorted({name for r in rows for name in r[:2]})  # type: ignore[type-var]
    index = {name: k for k, name in enumerate(players)}
    a = np.fromiter((index[r[0]] for r in rows), dtype=np.intp, count=len(rows))
    b = np.fromiter((index[r[1]] for r in rows), dtype=np.intp, count=len(rows))
    same = a == b
    if same.any():
        name = players[int(a[same][0])]
        raise ValueError(
            f"an outcome must compare two different versions, got {name!r} twice"
        )
    return players, a, b, scores  # type: ignore[return-value]


def _cells(outcomes: Iterable[Sequence[object]]) -> _Cells:
    players, a, b, score = _parse(outcomes)
    flip = a > b
    lo = np.where(flip, b, a)
    hi = np.where(flip, a, b)
    score = np.where(flip, 1.0 - score, score)
    keys = np.stack([lo.astype(np.float64), hi.astype(np.float64), score], axis=1)
    distinct, count = np.unique(keys, axis=0, return_counts=True)
    c_lo = distinct[:, 0].astype(np.intp)
    c_hi = distinct[:, 1].astype(np.intp)
    pairs, pair = np.unique(np.stack([c_lo, c_hi], axis=1), axis=0, return_inverse=True)
    return _Cells(
        players,
        c_lo,
        c_hi,
        distinct[:, 2],
        count.astype(np.int64),
        pair.reshape(-1).astype(np.intp),
        pairs[:, 0].astype(np.intp),
        pairs[:, 1].astype(np.intp),
    )


def _pair_scores(
    cells: _Cells, counts: NDArray[np.int64]
) -> tuple[FloatArray, FloatArray]:
    """Score of ``pair_lo`` and of ``pair_hi`` per pair, for cell ``counts``
    of shape ``(cells,)`` or ``(resamples, cells)``."""
    n_pairs = len(cells.pair_lo)
    to_pair = np.zeros((len(cells.score), n_pairs))
    to_pair[np.arange(len(cells.score)), cells.pair] = 1.0
    counts = counts.astype(np.float64)
    return (counts * cells.score) @ to_pair, (counts * (1.0 - cells.score)) @ to_pair


class _Objective:
    """Negative log-posterior of Bradley-Terry strengths ``s`` (length k).

    Pairs ``(i, j)`` carry the score ``w_i`` of ``i`` and ``w_j`` of ``j``:
    -sum[w_i log sigmoid(s_i - s_j) + w_j log sigmoid(s_j - s_i)]. With
    ``prior`` > 0 every version also has ``prior`` pseudo-wins and ``prior``
    pseudo-losses against a virtual player of log-strength 0, which makes the
    optimum unique and finite for any comparison graph. With ``prior == 0``
    the likelihood is flat along a common shift, so we add (sum s)^2 / 2,
    which pins the mean at 0 and changes nothing else. Everything is divided
    by the number of comparisons, so that a gradient tolerance means the same
    at 50 labels and at 50,000 and the trust region's predicted improvements
    stay above rounding error near the optimum.
    """

    def __init__(
        self,
        k: int,
        i: IntArray,
        j: IntArray,
        w_i: FloatArray,
        w_j: FloatArray,
        prior: float,
    ) -> None:
        self.k, self.i, self.j = k, i, j
        self.w_i, self.w_j, self.n = w_i, w_j, w_i + w_j
        self.prior = prior
        self.scale = 1.0 / max(float(self.n.sum()), 1.0)

    def value_and_gradient(self, s: FloatArray) -> tuple[float, FloatArray]:
        d = s[self.i] - s[self.j]
        value = -(self.w_i @ log_expit(d) + self.w_j @ log_expit(-d))
        g_pair = self.n * expit(d) - self.w_i
        gradient = np.bincount(self.i, g_pair, self.k) - np.bincount(
            self.j, g_pair, self.k
        )
        if self.prior > 0.0:
            value -= self.prior * float(np.sum(log_expit(s) + log_expit(-s)))
            gradient += self.prior * (2.0 * expit(s) - 1.0)
        else:
            total = float(s.sum())
            value += 0.5 * total * total
            gradient += total
        return float(value) * self.scale, gradient * self.scale

    def hessian(self, s: FloatArray) -> FloatArray:
        d = s[self.i] - s[self.j]
        h = self.n * expit(d) * expit(-d)
        matrix = np.zeros((self.k, self.k))
        np.add.at(matrix, (self.i, self.i), h)
        np.add.at(matrix, (self.j, self.j), h)
        np.add.at(matrix, (self.i, self.j), -h)
        np.add.at(matrix, (self.j, self.i), -h)
        if self.prior > 0.0:
            matrix[np.diag_indices(self.k)] += 2.0 * self.prior * expit(s) * expit(-s)
        else:
            matrix += 1.0
        return matrix * self.scale


def _fit(
    k: int,
    i: IntArray,
    j: IntArray,
    w_i: FloatArray,
    w_j: FloatArray,
    *,
    prior: float,
    max_iter: int = 1000,
    tol: float = 1e-9,
    start: FloatArray | None = None,
) -> FloatArray:
    """Raw (uncentred) log-strengths: scipy's trust-region Newton method."""
    objective = _Objective(k, i, j, w_i, w_j, prior)
    result = optimize.minimize(
        objective.value_and_gradient,
        np.zeros(k) if start is None else start,
        jac=True,
        hess=objective.hessian,
        method="trust-exact",
        options={"gtol": tol, "maxiter": max_iter},
    )
    # Status 2 ("failure to predict improvement") means the next step's gain is
    # below rounding error, which near the optimum is convergence.
    if not result.success and float(np.abs(result.jac).max()) > 1e-6:
        logger.warning(
            "core.stats.bradley_terry.not_converged message=%s", result.message
        )
    return np.asarray(result.x, dtype=np.float64)


def _centred(raw: FloatArray, players: list[str], anchor: str | None) -> FloatArray:
    if anchor is not None and anchor in players:
        return raw - raw[..., players.index(anchor), None]
    return raw - raw.mean(axis=-1, keepdims=True)


def _mle_exists(cells: _Cells) -> bool:
    """Whether the directed graph "i scored against j" is strongly connected."""
    k = len(cells.players)
    if k <= 1:
        return True
    src = np.concatenate([cells.lo[cells.score > 0.0], cells.hi[cells.score < 1.0]])
    dst = np.concatenate([cells.hi[cells.score > 0.0], cells.lo[cells.score < 1.0]])
    graph = coo_array((np.ones(len(src)), (src, dst)), shape=(k, k))
    n_components, _ = connected_components(graph, directed=True, connection="strong")
    return int(n_components) == 1


def bradley_terry(
    outcomes: Iterable[Sequence[object]],
    *,
    anchor: str | None = None,
    max_iter: int = 1000,
    tol: float = 1e-9,
    prior: float = 0.5,
) -> dict[str, float]:
    """Bradley-Terry log-strengths of every version that appears in ``outcomes``.

    The maximum of the likelihood on aggregated counts (a tie, or any
    fractional result r, counts as r of a win for ``a`` and 1 - r for ``b``)
    plus a regularising prior: each version gets ``prior`` pseudo-wins and
    ``prior`` pseudo-losses against a virtual average player, so a version
    that never lost (or never won) still gets a finite strength and a
    disconnected comparison graph still has a unique answer (components are
    tied together only through the prior, so their relative levels mean
    little). ``prior=0`` gives the plain maximum-likelihood estimate and raises
    ``ValueError`` when it does not exist (the "who scored against whom" graph
    is not strongly connected).

    Returns ``{version: log_strength}`` in sorted version order, on the natural
    log scale (P(i beats j) = sigmoid(s_i - s_j); see ``ELO_PER_LOG_STRENGTH``),
    centred so that ``anchor`` is 0 if given and present, else so that the mean
    is 0. Empty input returns ``{}``. ``tol`` bounds the gradient of the
    per-comparison log-posterior at the optimum; ``max_iter`` bounds the
    Newton iterations.
    """
    if prior < 0:
        raise ValueError(f"prior must be non-negative, got {prior}")
    cells = _cells(outcomes)
    k = len(cells.players)
    if k == 0:
        return {}
    if prior == 0.0 and not _mle_exists(cells):
        raise ValueError(
            "the maximum-likelihood estimate does not exist for this comparison "
            "graph (some version never lost or never won against a group); use prior > 0"
        )
    w_lo, w_hi = _pair_scores(cells, cells.count)
    raw = _fit(
        k,
        cells.pair_lo,
        cells.pair_hi,
        w_lo,
        w_hi,
        prior=prior,
        max_iter=max_iter,
        tol=tol,
    )
    centred = _centred(raw, cells.players, anchor)
    return {name: float(s) for name, s in zip(cells.players, centred, strict=True)}


def bootstrap_bradley_terry(
    outcomes: Iterable[Sequence[object]],
    *,
    n_boot: int = 200,
    seed: int = 0,
    anchor: str | None = None,
    alpha: float = 0.05,
    prior: float = 0.5,
) -> dict[str, tuple[float, float, float]]:
    """Bradley-Terry estimates with percentile bootstrap intervals.

    Returns ``{version: (estimate, lower, upper)}``: ``estimate`` is
    :func:`bradley_terry` on all outcomes (same ``anchor`` and ``prior``);
    ``lower``/``upper`` are the ``alpha/2`` and ``1 - alpha/2`` quantiles
    (linear interpolation) of the estimates over ``n_boot`` resamples of the
    outcomes with replacement, each centred the same way (so the anchor's
    interval is exactly (0, 0)). Every resample keeps every version; one
    absent from a resample is placed by the prior alone. Percentile intervals
    need not contain the estimate when the bootstrap distribution is skewed.
    ``prior`` must be > 0 because resamples routinely break the conditions for
    a plain MLE. Deterministic given ``seed``.

    Resamples are multinomial count vectors over the distinct outcomes (see
    the module docstring), each fitted warm-started from the full-data fit.
    Measured on the 2-core development machine: 200 resamples of 50,000
    outcomes among 6 versions take about 0.3 s, nearly all of it in the fits.
    """
    if prior <= 0:
        raise ValueError(f"bootstrap needs prior > 0, got {prior}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    cells = _cells(outcomes)
    k = len(cells.players)
    if k == 0:
        return {}
    i, j = cells.pair_lo, cells.pair_hi
    w_lo, w_hi = _pair_scores(cells, cells.count)
    full = _fit(k, i, j, w_lo, w_hi, prior=prior)
    estimate = _centred(full, cells.players, anchor)

    rng = np.random.default_rng(seed)
    n = cells.n
    drawn = rng.multinomial(n, cells.count / n, size=n_boot)
    b_lo, b_hi = _pair_scores(cells, drawn)
    samples = np.empty((n_boot, k))
    for r in range(n_boot):
        samples[r] = _fit(k, i, j, b_lo[r], b_hi[r], prior=prior, tol=1e-7, start=full)
    samples = _centred(samples, cells.players, anchor)
    lower = np.quantile(samples, alpha / 2.0, axis=0)
    upper = np.quantile(samples, 1.0 - alpha / 2.0, axis=0)
    return {
        name: (float(estimate[idx]), float(lower[idx]), float(upper[idx]))
        for idx, name in enumerate(cells.players)
    }


# --------------------------------------------------------------------------
# Win rates
# --------------------------------------------------------------------------


class WinRate(NamedTuple):
    """Head-to-head record of ``a`` against ``b`` (see :func:`win_rate`)."""

    wins: int
    losses: int
    ties: int
    n: int
    rate: float
    lower: float
    upper: float


NO_WIN_RATE = WinRate(0, 0, 0, 0, 0.5, 0.0, 1.0)


def _win_rate(
    values: FloatArray, counts: NDArray[np.int64], rng: np.random.Generator, n_boot: int
) -> WinRate:
    """Win rate from distinct scores ``values`` seen ``counts`` times."""
    n = int(counts.sum())
    if n == 0:
        return NO_WIN_RATE
    wins = int(counts[values == 1.0].sum())
    losses = int(counts[values == 0.0].sum())
    drawn = rng.multinomial(n, counts / n, size=n_boot)
    means = drawn @ values / n
    lower, upper = np.quantile(means, [0.025, 0.975])
    return WinRate(
        wins=wins,
        losses=losses,
        ties=n - wins - losses,
        n=n,
        rate=float(counts @ values / n),
        lower=float(lower),
        upper=float(upper),
    )


def win_rate(
    outcomes: Iterable[Sequence[object]],
    a: str,
    b: str,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> WinRate:
    """Win rate of ``a`` against ``b`` over outcomes between exactly those two.

    Outcomes in either order count (``(b, a, r)`` is ``a`` scoring 1 - r);
    others are ignored. ``wins``/``losses`` count scores of 1 and 0, ``ties``
    every fractional score (normally 0.5); ``rate`` is the mean score, so a
    tie counts half. ``lower``/``upper`` is a 95% percentile bootstrap
    interval (``n_boot`` resamples of those outcomes with replacement,
    deterministic given ``seed``). Note that it collapses to a point when
    every outcome has the same score (e.g. all wins). With no outcomes:
    ``WinRate(0, 0, 0, 0, rate=0.5, lower=0.0, upper=1.0)``.
    """
    if a == b:
        raise ValueError(f"a and b must differ, got {a!r} twice")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    players, x, y, score = _parse(outcomes)
    if a not in players or b not in players:
        return NO_WIN_RATE
    # Resample in the pair's sorted orientation and mirror, so that swapping
    # a and b mirrors the interval exactly (same draws either way).
    lo, hi = sorted((a, b))
    i_lo, i_hi = players.index(lo), players.index(hi)
    scores = np.concatenate(
        [score[(x == i_lo) & (y == i_hi)], 1.0 - score[(x == i_hi) & (y == i_lo)]]
    )
    values, counts = np.unique(scores, return_counts=True)
    forward = _win_rate(
        values, counts.astype(np.int64), np.random.default_rng(seed), n_boot
    )
    return forward if a == lo else _mirrored(forward)


def _mirrored(rate: WinRate) -> WinRate:
    """The same record seen from the other side."""
    return WinRate(
        wins=rate.losses,
        losses=rate.wins,
        ties=rate.ties,
        n=rate.n,
        rate=1.0 - rate.rate,
        lower=1.0 - rate.upper,
        upper=1.0 - rate.lower,
    )


def win_rates(
    outcomes: Iterable[Sequence[object]], *, n_boot: int = 1000, seed: int = 0
) -> dict[tuple[str, str], WinRate]:
    """:func:`win_rate` for every pair that met, in both orders:
    ``result[(a, b)]`` is ``a`` against ``b`` and ``result[(b, a)]`` its
    mirror. Each pair's interval comes from its own generator seeded with
    ``seed``, so ``result[(a, b)] == win_rate(outcomes, a, b)``."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    cells = _cells(outcomes)
    out: dict[tuple[str, str], WinRate] = {}
    for p, (lo, hi) in enumerate(zip(cells.pair_lo, cells.pair_hi, strict=True)):
        mine = cells.pair == p
        forward = _win_rate(
            cells.score[mine], cells.count[mine], np.random.default_rng(seed), n_boot
        )
        a, b = cells.players[int(lo)], cells.players[int(hi)]
        out[(a, b)] = forward
        out[(b, a)] = _mirrored(forward)
    return out


def win_rate_matrix(
    outcomes: Iterable[Sequence[object]],
) -> dict[str, dict[str, tuple[float, int]]]:
    """``matrix[a][b] == (rate, n)``: mean score of ``a`` against ``b`` (ties
    half) over the ``n`` outcomes between them, for every ordered pair with
    ``n > 0``. ``matrix[b][a]`` is ``(1 - rate, n)``. Versions and opponents
    are in sorted order; a version with no outcomes does not appear.
    """
    cells = _cells(outcomes)
    if not len(cells.pair_lo):
        return {}
    w_lo, _ = _pair_scores(cells, cells.count)
    n = np.bincount(cells.pair, cells.count, len(cells.pair_lo))
    matrix: dict[str, dict[str, tuple[float, int]]] = {}
    for lo, hi, score, count in zip(cells.pair_lo, cells.pair_hi, w_lo, n, strict=True):
        a, b = cells.players[int(lo)], cells.players[int(hi)]
        rate = float(score / count)
        matrix.setdefault(a, {})[b] = (rate, int(count))
        matrix.setdefault(b, {})[a] = (1.0 - rate, int(count))
    return {name: dict(sorted(row.items())) for name, row in sorted(matrix.items())}


# --------------------------------------------------------------------------
# Agreement
# --------------------------------------------------------------------------


def _codes(values: Sequence[Hashable]) -> tuple[IntArray, int]:
    index: dict[Hashable, int] = {}
    codes = np.fromiter(
        (index.setdefault(v, len(index)) for v in values),
        dtype=np.intp,
        count=len(values),
    )
    return codes, len(index)


def cohen_kappa(pairs: Sequence[tuple[Hashable, Hashable]]) -> float | None:
    """Cohen's kappa for two raters; ``pairs[i] = (rater1_label, rater2_label)``.

    Labels are any hashables (compared with ``==``). kappa = (p_o - p_e) /
    (1 - p_e), with p_e from each rater's own marginal distribution.
    Returns ``None`` for fewer than 2 items. When p_e == 1 kappa is 0/0; that
    only happens when both raters gave every item the same single label, so
    observed agreement is also 1, and we return 1.0 (perfect, if
    uninformative, agreement). Computed from integer counts, so the p_e == 1
    check is exact.
    """
    n = len(pairs)
    if n < 2:
        return None
    codes, m = _codes([label for pair in pairs for label in pair])
    confusion = np.zeros((m, m), dtype=np.int64)
    np.add.at(confusion, (codes[0::2], codes[1::2]), 1)
    agree = int(np.trace(confusion))
    expected = int(confusion.sum(axis=1) @ confusion.sum(axis=0))  # p_e * n^2
    if expected == n * n:
        return 1.0
    return (agree * n - expected) / (n * n - expected)


def krippendorff_alpha_nominal(
    units: Mapping[Hashable, Sequence[Hashable]],
) -> float | None:
    """Krippendorff's alpha for nominal data, by the ``krippendorff`` package.

    ``units`` maps each unit (item) to the values its raters gave it, any
    number per unit; ``None`` values are treated as missing and dropped.
    Units left with fewer than 2 values are not pairable and are ignored.

    Returns ``None`` when fewer than 2 pairable values exist or when there is
    no variation (every pairable value is the same, so expected disagreement
    is 0 and alpha is 0/0). 1.0 is perfect agreement, 0 is chance level, and
    it can be negative.
    """
    present = [[v for v in values if v is not None] for values in units.values()]
    pairable = [values for values in present if len(values) >= 2]
    flat = [v for values in pairable for v in values]
    if len(flat) < 2:
        return None
    codes, n_values = _codes(flat)
    if n_values < 2:
        return None
    unit_of = np.repeat(np.arange(len(pairable)), [len(v) for v in pairable])
    counts = np.zeros((len(pairable), n_values), dtype=np.int64)
    np.add.at(counts, (unit_of, codes), 1)
    return float(
        krippendorff.alpha(value_counts=counts, level_of_measurement="nominal")
    )


# --------------------------------------------------------------------------
# Position bias
# --------------------------------------------------------------------------


def left_pick_rate(
    picks: Sequence[bool], z: float = 1.96
) -> tuple[float, float, float]:
    """``(rate, lower, upper)``: share of ``picks`` that chose the left side, with
    its Wilson interval (95% by default). No picks gives ``(0.5, 0.0, 1.0)``.
    """
    n = len(picks)
    if n == 0:
        return (0.5, 0.0, 1.0)
    left = sum(1 for p in picks if p)
    lower, upper = wilson_interval(left, n, z)
    return (left / n, lower, upper)


def is_position_biased(picks: Sequence[bool], *, min_n: int = 20) -> bool:
    """True when there are at least ``min_n`` picks and the 95% Wilson interval
    of the left-pick rate excludes 0.5 (a preference for either side)."""
    if len(picks) < min_n:
        return False
    _, lower, upper = left_pick_rate(picks)
    return lower > 0.5 or upper < 0.5
