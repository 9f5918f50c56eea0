"""Statistics behind the curves' decisions: the trend test, bootstrap weights, reaching steps, BH q-values."""

from __future__ import annotations

import hashlib
import itertools
import math
from functools import lru_cache

import numpy as np

EXACT_UP_TO = 720  # orders (6 checkpoints) up to which the trend test's null is enumerated; Monte Carlo above
MONTE_CARLO = 1000


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
    above = (boot[:, None, :] > boot[:, :, None]).mean(axis=0) >= 1 - alpha / 2
    below = (boot[:, None, :] < boot[:, :, None]).mean(axis=0) >= 1 - alpha / 2
    if wins is not None:
        p_up = sign_test_greater(wins)
        above, below = above & (p_up < alpha / 2), below & (p_up.T < alpha / 2)
    return above.astype(float) - below


def trend_statistic(signs: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """For (..., T, T) pair signs (checkpoints in step order) and the reference's position (...,), the larger of
    two Mann-Kendall z-scores (S over its standard deviation for m untied points): the rise, S over the pairs
    from the first checkpoint up to the reference, and the rise and fall, that S plus the S of a decline from
    the reference to the final (a curve that learned, then degrades steadily, is a trend; one that jumps about
    is not). A reference at the first checkpoint gives -inf: nothing rose."""
    T = signs.shape[-1]
    pos = np.arange(T)
    i, j, k = pos[:, None], pos[None, :], np.asarray(ref)[..., None, None]
    rise = (signs * ((i < j) & (j <= k))).sum(axis=(-2, -1))
    fall = -(signs * ((k <= i) & (i < j))).sum(axis=(-2, -1))
    up, down = np.asarray(ref) + 1, T - np.asarray(ref)
    z_rise = rise / np.sqrt(np.maximum(_mk_var(up), 1))
    z_both = (rise + fall) / np.sqrt(np.maximum(_mk_var(up) + _mk_var(down), 1))
    return np.where(up >= 2, np.maximum(z_rise, z_both), -np.inf)


@lru_cache(maxsize=64)
def _orders(T: int) -> tuple[np.ndarray, bool]:
    """Every order of T checkpoints (identity first), or the identity and MONTE_CARLO - 1 random ones; exact?"""
    if math.factorial(T) <= EXACT_UP_TO:
        return np.array(list(itertools.permutations(range(T))), dtype=np.intp), True
    rng = np.random.default_rng(T)
    random = np.argsort(rng.random((MONTE_CARLO - 1, T)), axis=1)
    return np.concatenate([np.arange(T)[None], random]), False


def trend_p(values: np.ndarray, reference: str = "best", signs: np.ndarray | None = None) -> np.ndarray:
    """One-sided permutation p-value that each row of values (M, T), in step order, rises as a trend from its
    first checkpoint to its reference (`trend_statistic`), against the null that the checkpoints' order is
    exchangeable (they differ, but not with training): the statistic is recomputed for every order of the
    checkpoints (exact up to 6, 1,000 orders above), the reference (the best) moving with its checkpoint, so
    picking the best does not inflate the evidence. `signs` (M, T, T): which pairs differ beyond the noise
    (`bootstrap_pair_signs`); by default every difference counts. The smallest p-value is 1/T!: with 3
    checkpoints or fewer no curve passes at alpha = 0.05."""
    values = np.atleast_2d(np.asarray(values, dtype=float))
    M, T = values.shape
    if T < 2:
        return np.ones(M)
    signs = pair_signs(values) if signs is None else np.asarray(signs, dtype=float)
    orders, _ = _orders(T)
    where = np.argsort(orders, axis=1)  # where[p, c]: the position of checkpoint c in order p
    best = np.argmax(values, axis=1)
    out = np.empty(M)
    chunk = max(1, 2 ** 22 // (len(orders) * T * T))
    for lo in range(0, M, chunk):
        sg = signs[lo:lo + chunk]
        permuted = sg[:, orders[:, :, None], orders[:, None, :]]  # (m, P, T, T): the pairs in each order
        ref = where[:, best[lo:lo + chunk]].T if reference == "best" else np.full((len(sg), len(orders)), T - 1)
        stat = trend_statistic(permuted, ref)
        out[lo:lo + chunk] = (stat >= stat[:, :1] - 1e-9).mean(axis=1)  # the identity (order 0) included
    return out


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
