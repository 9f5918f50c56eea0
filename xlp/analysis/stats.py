"""Statistics behind the curves' decisions: the trend test, bootstrap weights, reaching steps, BH q-values."""

from __future__ import annotations

import hashlib
import itertools
import math
from functools import lru_cache

import numpy as np

EXACT_UP_TO = 720  # orders (6 checkpoints) up to which the trend test's null is enumerated; Monte Carlo above
MONTE_CARLO = 1000  # the first round of random orders (the identity and 999 others)
MAX_ORDERS = 200_000  # the most random orders the adaptive trend test draws for one curve


def _mk_var(m: np.ndarray) -> np.ndarray:
    return m * (m - 1) * (2 * m + 5) / 18.0  # variance of Mann-Kendall's S over m distinct points


def pair_signs(values: np.ndarray) -> np.ndarray:
    """(M, T, T) signs of value_j - value_i for rows of values (M, T): 0 for a tie."""
    v = np.asarray(values, dtype=float)
    return np.sign(v[:, None, :] - v[:, :, None])


def sign_test_greater(wins: np.ndarray) -> np.ndarray:
    """One-sided exact sign test per pair: wins[i, j] = items on which checkpoint j is above i; the p-value
    that j is not above i, from the items where the two differ (p = 1 where none do)."""
    from scipy.stats import binom

    up, down = wins, wins.T
    return binom.sf(up - 1, up + down, 0.5)


def bootstrap_pair_signs(boot: np.ndarray, alpha: float, wins: np.ndarray | None = None) -> np.ndarray:
    """(T, T) signs of value_j - value_i that count only differences beyond the noise: +1 where checkpoint j is
    above i in at least 1 - alpha/2 of the bootstrap replicates (n_boot, T), -1 where below, 0 otherwise; with
    per-pair item counts `wins`, a two-sided exact sign test at alpha must agree (few differing items)."""
    # the share of replicates in which j is above i: an exact count over n_boot (what a mean of 0/1 is), and
    # "j below i" is "i above j", the transpose
    reps = np.ascontiguousarray(np.asarray(boot).T)  # (T, n_boot): each checkpoint's replicates, contiguous
    share = np.count_nonzero(reps[None, :, :] > reps[:, None, :], axis=2) / len(boot)
    above, below = share >= 1 - alpha / 2, share.T >= 1 - alpha / 2
    if wins is not None:
        p_up = sign_test_greater(wins)
        above, below = above & (p_up < alpha / 2), below & (p_up.T < alpha / 2)
    return above.astype(float) - below


def trend_statistic(rise: np.ndarray, fall: np.ndarray, ref: np.ndarray, T: int) -> np.ndarray:
    """The larger of two Mann-Kendall z-scores (S over its standard deviation for m untied points) of T checkpoints
    with the reference at position `ref`: the rise, S over the pairs from the first checkpoint up to the reference,
    and the rise and fall, that S plus the S of a decline from the reference to the final (a curve that learned,
    then degrades steadily, is a trend; one that jumps about is not); `rise` and `fall` those sums of pair signs
    (`running_sums` at ref). A reference at the first checkpoint gives -inf: nothing rose."""
    up, down = np.asarray(ref) + 1, T - np.asarray(ref)
    z_rise = rise / np.sqrt(np.maximum(_mk_var(up), 1))
    z_both = (rise + fall) / np.sqrt(np.maximum(_mk_var(up) + _mk_var(down), 1))
    return np.where(up >= 2, np.maximum(z_rise, z_both), -np.inf)


def running_sums(signs: np.ndarray, orders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For pair signs (M, T, T) (-1, 0 or +1) and orders (P, T) of the checkpoints: per row and order, for every
    position k of the reference, the rise (M, P, T), the sum of the signs of the pairs i < j <= k, and the fall,
    minus the sum over k <= i < j, positions taken in that order. Per checkpoint, the signs of its pairs with the
    checkpoints before it in each order (and, per row, after it) are summed by batched matrix products over all
    rows and orders at once, then run up to (down from) each position: sums of at most T^2 signs, exact in float32."""
    where = np.argsort(orders, axis=1)  # where[p, c]: the position of checkpoint c in order p
    before = (where[:, :, None] < where[:, None, :]).astype(np.float32)  # (P, d, c): d comes before c
    s = np.asarray(signs, dtype=np.float32)
    into = np.matmul(s.transpose(2, 0, 1), before.transpose(2, 1, 0))  # (c, M, P): pairs (d before c), per c
    out_of = np.matmul(s.transpose(1, 0, 2), before.transpose(1, 2, 0))  # (d, M, P): pairs (d before c), per d
    into = np.take_along_axis(into.transpose(1, 2, 0), orders[None], -1)  # (M, P, position)
    out_of = np.take_along_axis(out_of.transpose(1, 2, 0), orders[None], -1)
    return np.cumsum(into, axis=-1), -np.cumsum(out_of[..., ::-1], axis=-1)[..., ::-1]


@lru_cache(maxsize=64)
def _all_orders(T: int) -> np.ndarray:
    """Every order of T checkpoints, the identity first."""
    return np.array(list(itertools.permutations(range(T))), dtype=np.intp)


def _random_orders(T: int, n: int, round_: int) -> np.ndarray:
    """n random orders of T checkpoints, fixed by T, the round and n (reproducible)."""
    rng = np.random.default_rng([T, round_, n])
    return np.argsort(rng.random((n, T)), axis=1)


def _statistic(sums: tuple[np.ndarray, np.ndarray], ref: np.ndarray, T: int) -> np.ndarray:
    """`trend_statistic` of `running_sums` (rise, fall) with the reference at `ref` (M, P)."""
    rise, fall = (np.take_along_axis(x, ref[..., None], -1)[..., 0].astype(float) for x in sums)
    return trend_statistic(rise, fall, ref, T)


def _exceed(values: np.ndarray, signs: np.ndarray, orders: np.ndarray, reference: str,
            observed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per row: how many of `orders` give a trend statistic >= the observed one, and the observed statistic
    (the identity order's, computed here when `observed` is None)."""
    M, T = values.shape
    where = np.argsort(orders, axis=1)  # where[p, c]: the position of checkpoint c in order p
    best = np.argmax(values, axis=1)
    if observed is None:
        ref = best[:, None] if reference == "best" else np.full((M, 1), T - 1)
        observed = _statistic(running_sums(signs, np.arange(T)[None]), ref, T)[:, 0]
    count = np.zeros(M, dtype=np.int64)
    chunk = max(1, 2 ** 21 // (len(orders) * T))
    for lo in range(0, M, chunk):
        sg = signs[lo:lo + chunk]
        ref = where[:, best[lo:lo + chunk]].T if reference == "best" else np.full((len(sg), len(orders)), T - 1)
        stat = _statistic(running_sums(sg, orders), ref, T)
        count[lo:lo + chunk] = (stat >= observed[lo:lo + chunk, None] - 1e-9).sum(axis=1)
    return count, observed


def trend_p(values: np.ndarray, reference: str = "best", signs: np.ndarray | None = None,
            max_orders: int | np.ndarray = MONTE_CARLO, enough: int = 10) -> np.ndarray:
    """One-sided permutation p-value that each row of values (M, T), in step order, rises as a trend from its
    first checkpoint to its reference (`trend_statistic`), against the null that the checkpoints' order is
    exchangeable (they differ, but not with training): the statistic is recomputed for every order of the
    checkpoints (exact up to 6 checkpoints: p >= 1/T!), else for random orders, the reference (the best)
    moving with its checkpoint, so picking the best does not inflate the evidence. `signs` (M, T, T): which
    pairs differ beyond the noise (`bootstrap_pair_signs`); by default every difference counts.

    Monte Carlo (7 checkpoints or more): p = (b + 1) / (B + 1) over B random orders, b of them at least as
    extreme (the identity counted once: p > 0). Adaptive: B + 1 starts at MONTE_CARLO; a row with fewer than
    `enough` exceedances gets nine times as many fresh orders again, until B + 1 reaches its `max_orders`
    (a number or one per row), so a p-value near a small level is resolved rather than floored at 1/1000.
    With 3 checkpoints or fewer no curve passes at alpha = 0.05 (exact: p >= 1/6).

    The null is exchangeability, not "nothing was learned": a drifting curve (serially correlated noise)
    rejects it, which is why emergence also asks for a minimum rise (`analysis.min_effect`)."""
    values = np.atleast_2d(np.asarray(values, dtype=float))
    M, T = values.shape
    if T < 2:
        return np.ones(M)
    signs = pair_signs(values) if signs is None else np.asarray(signs, dtype=float)
    if math.factorial(T) <= EXACT_UP_TO:
        count, _ = _exceed(values, signs, _all_orders(T), reference, None)
        return count / math.factorial(T)  # the identity is one of the orders: p >= 1/T!
    limit = np.broadcast_to(np.asarray(max_orders, dtype=np.int64), (M,))
    n, round_ = MONTE_CARLO - 1, 0
    count, observed = _exceed(values, signs, _random_orders(T, n, round_), reference, None)
    drawn = np.full(M, n, dtype=np.int64)
    while True:
        more = (count < enough) & (drawn + 1 < limit)
        if not more.any():
            break
        round_ += 1  # the rows still drawing have drawn alike so far
        total = int(drawn[more].max()) + 1
        n = min(9 * total, int(limit[more].max()) - total)
        rows = np.flatnonzero(more)
        extra, _ = _exceed(values[rows], signs[rows], _random_orders(T, n, round_), reference, observed[rows])
        count[rows] += extra
        drawn[rows] += n
    return (count + 1) / (drawn + 1)


def boot_p(d: np.ndarray, margin: float = 0.0) -> float:
    """One-sided bootstrap p-value that a statistic is not above `margin`: (b + 1) / (B + 1) with b of the B
    replicates `d` at or below it (never 0: the smallest is 1 / (B + 1))."""
    d = np.asarray(d, dtype=float)
    return float((np.sum(d <= margin) + 1) / (len(d) + 1))


def reach_index(values: np.ndarray, reference: np.ndarray, theta: float, normalized: bool = False) -> np.ndarray:
    """Index of the first checkpoint (last axis) reaching theta x reference (values scored higher-is-better;
    a negative reference, e.g. -bpc, is reached at reference / theta); normalised: the first where
    (value - first) / (reference - first) >= theta, index 0 when the reference is not above the first."""
    values = np.asarray(values, dtype=float)
    ref = np.asarray(reference, dtype=float)[..., None]
    if normalized:
        first = values[..., :1]
        gain = ref - first
        reach = ((values - first) >= theta * gain) | (gain <= 0)
    else:
        reach = np.where(ref >= 0, values >= theta * ref, values >= ref / theta)
    return np.argmax(reach, axis=-1)  # the reference itself always reaches, so some index does


def percentile_step(steps: np.ndarray, q: float) -> float:
    """A percentile of bootstrap steps that is itself one of them (the inverted empirical CDF)."""
    return float(np.quantile(steps, q, method="inverted_cdf")) if len(steps) else float("nan")


def stable_rng(seed: int, *names: object) -> np.random.Generator:
    """A generator fixed by the seed and the names (e.g. task and target), whatever order groups are visited in."""
    h = hashlib.sha256(repr((seed, *names)).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def multinomial_weights(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """(n, n_boot) float32 counts, contiguous for a matrix product: how often each of n items is drawn in each
    bootstrap resample of n items."""
    draws = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    counts = np.bincount(draws.ravel(), minlength=n * n_boot).reshape(n_boot, n)
    return np.ascontiguousarray(counts.T, dtype=np.float32)


def bh_q(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (NaN p-values are left out of the family and stay NaN)."""
    p = np.asarray(p, dtype=float)
    q = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m:
        order = np.argsort(p[ok])
        scaled = p[ok][order] * m / np.arange(1, m + 1)
        q_sorted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
        q_ok = np.empty(m)
        q_ok[order] = q_sorted
        q[ok] = q_ok
    return q


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test: the probability of a split at least this uneven if either order were a coin flip."""
    n = wins + losses
    if n == 0:
        return float("nan")
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return float(min(1.0, 2 * tail))
