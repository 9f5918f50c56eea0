"""Statistics behind the curves' decisions: the trend test, bootstrap weights, reaching steps, BH q-values."""

from __future__ import annotations

import hashlib
import itertools
import math
from functools import lru_cache

import numpy as np

EXACT_UP_TO = 8  # checkpoints: up to 8! = 40,320 orders the trend test's null is enumerated; Monte Carlo above
MONTE_CARLO = 20_000


def ranks_against_trend(values: np.ndarray) -> np.ndarray:
    """Ranks 0..T-1 of each row of values (..., T); ties go against a rising trend (the later checkpoint of a
    tie ranks lower), so a flat curve reads as falling and never passes the trend test."""
    values = np.asarray(values, dtype=float)
    T = values.shape[-1]
    later_first = np.broadcast_to(-np.arange(T), values.shape)
    order = np.lexsort((later_first, values), axis=-1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(T), values.shape), axis=-1)
    return ranks


def _mk_var(m: np.ndarray) -> np.ndarray:
    return m * (m - 1) * (2 * m + 5) / 18.0  # variance of Mann-Kendall's S over m distinct points


def trend_statistic(ranks: np.ndarray, reference: str) -> np.ndarray:
    """For rows of ranks (P, T) in step order, the larger of two Mann-Kendall z-scores (S over its standard
    deviation under independence): the rise, S of the checkpoints from the first up to the reference (the
    best: the highest rank; or the final), and the rise and fall, that S plus the S of a decline from the
    reference to the final (a curve that learned and then degrades smoothly is a trend; one that jumps about
    is not). A reference at the first checkpoint gives -inf: nothing rose."""
    ranks = np.asarray(ranks)
    P, T = ranks.shape
    ref = np.argmax(ranks, axis=1) if reference == "best" else np.full(P, T - 1)
    out = np.empty(P)
    pos = np.arange(T)
    i, j = pos[None, :, None], pos[None, None, :]
    for lo in range(0, P, 2048):  # (chunk, T, T) signs at a time
        r, k = ranks[lo:lo + 2048], ref[lo:lo + 2048, None, None]
        sign = np.sign(r[:, None, :] - r[:, :, None])  # [p, i, j] = sign(r_j - r_i)
        rise = (sign * ((i < j) & (j <= k))).sum(axis=(1, 2))
        fall = -(sign * ((k <= i) & (i < j))).sum(axis=(1, 2))
        up, down = ref[lo:lo + 2048] + 1, T - ref[lo:lo + 2048]
        z_rise = rise / np.sqrt(np.maximum(_mk_var(up), 1))
        z_both = (rise + fall) / np.sqrt(np.maximum(_mk_var(up) + _mk_var(down), 1))
        out[lo:lo + 2048] = np.where(up >= 2, np.maximum(z_rise, z_both), -np.inf)
    return out


@lru_cache(maxsize=64)
def _trend_null(T: int, reference: str) -> tuple[np.ndarray, bool]:
    """The statistic over every order of T checkpoints (sorted), or over MONTE_CARLO random orders; exact?"""
    if T <= EXACT_UP_TO:
        perms = np.array(list(itertools.permutations(range(T))), dtype=np.int16)
        exact = True
    else:
        rng = np.random.default_rng(T)
        perms = np.argsort(rng.random((MONTE_CARLO, T)), axis=1).astype(np.int16)
        exact = False
    return np.sort(trend_statistic(perms, reference)), exact


def trend_p(values: np.ndarray, reference: str = "best") -> np.ndarray:
    """One-sided permutation p-value that each row of values (M, T), in step order, rises as a trend from its
    first checkpoint to its reference (`trend_statistic`), against the null that the checkpoints' order is
    exchangeable (they differ, but not with training). The reference's choice (the argmax) is part of the
    permuted statistic, so picking the best does not inflate the evidence. The smallest p-value is 1/T!:
    with 3 checkpoints or fewer no curve passes at alpha = 0.05."""
    values = np.atleast_2d(np.asarray(values, dtype=float))
    M, T = values.shape
    if T < 2:
        return np.ones(M)
    null, exact = _trend_null(T, reference)
    stat = trend_statistic(ranks_against_trend(values), reference)
    at_least = len(null) - np.searchsorted(null, stat - 1e-9, side="left")
    return at_least / len(null) if exact else (1 + at_least) / (1 + len(null))


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
