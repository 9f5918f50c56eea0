"""One curve's decisions from its per-item scores: emerged (with a bootstrap interval on the step) and the
cross-fitted degradation test. Curves come in (steps T, seeds K, columns k, items n) arrays of per-item
scores: 0/1 correctness, or the columns whose sums give a task's metric (bits and characters for bpc)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from xlp.analysis.stats import (
    bootstrap_pair_signs,
    multinomial_weights,
    percentile_step,
    reach_index,
    sign_test_greater,
    trend_p,
)
from xlp.config import AnalysisSpec


def item_groups(probes: pd.DataFrame) -> dict[tuple, dict[tuple, np.ndarray]]:
    """Per (task, target, n_test), per curve (task, layer, source, target): its per-item scores as (T steps,
    K seeds, k columns, n items): a row's `correct` (k = 1, 0/1) or its `item_sums` (the k columns whose sums
    give the metric through the task's `value_from_sums`); seeds collapsed to one when every seed scored every
    item alike."""
    out: dict[tuple, dict[tuple, np.ndarray]] = {}
    for column in ("correct", "item_sums"):
        if column not in probes:
            continue
        rows = probes[probes[column].notna() & (probes["n_test"] > 0)]
        for (task, tgt, n), g in rows.groupby(["task", "tgt_lang", "n_test"], sort=True):
            n = int(n)
            if column == "correct":
                packed = np.frombuffer(b"".join(g[column]), dtype=np.uint8).reshape(len(g), -1)
                data = np.unpackbits(packed, axis=1, count=n)[:, None, :]
            else:
                data = np.frombuffer(b"".join(g[column]), dtype=np.float32).reshape(len(g), -1, n)
            index = {k: i for i, k in enumerate(zip(g["layer"], g["src_lang"], g["step"], g["seed"]))}
            curves = out.setdefault((task, tgt, n), {})
            for (layer, src), c in g.groupby(["layer", "src_lang"], sort=True):
                steps, seeds = np.unique(c["step"]), np.unique(c["seed"])
                at = [[index.get((layer, src, s, k)) for k in seeds] for s in steps]
                if any(i is None for row in at for i in row):
                    continue  # a seed missing at some checkpoint: no paired resampling for this curve
                items = data[np.array(at)]  # (T, K, k, n)
                if (items == items[:, :1]).all():
                    items = items[:, :1]
                curves[(task, int(layer), src, tgt)] = items
    return out


def bootstrap(curves: dict[tuple, np.ndarray], n: int, rng: np.random.Generator, n_boot: int,
              value: Callable[[np.ndarray, int], np.ndarray], sign: int = 1) -> dict[tuple, dict]:
    """For curves over the same n test items: a fixed random split of the items into halves A and B, and per
    curve its seed-averaged value on each half (T,), bootstrap replicates of it (n_boot, T) and of the whole
    curve (`whole`). A replicate resamples the items within each half (one draw for every checkpoint: paired)
    and, where seeds differ, the seeds (one draw for every checkpoint too); the metric is recomputed from the
    resampled items' column sums by `value` (the task's `value_from_sums`), times `sign` (-1 where lower is
    better, so every curve is scored higher-is-better). One matrix product per chunk of curves."""
    perm = rng.permutation(n)
    halves = [np.sort(perm[: n // 2]), np.sort(perm[n // 2:])]
    weights = [multinomial_weights(rng, n_boot, len(h)) for h in halves]
    seed_weights: dict[int, np.ndarray] = {}
    out: dict[tuple, dict] = {key: {"point": [], "boot": []} for key in curves}

    def score(sums: np.ndarray, count: int) -> np.ndarray:  # sums (T, k, ...) -> signed values (T, ...)
        with np.errstate(divide="ignore", invalid="ignore"):
            return sign * np.asarray(value(np.moveaxis(sums, 1, 0).astype(float), count), dtype=float)

    for k, items in curves.items():  # per pair of checkpoints, the items on which j beats i and i beats j
        out[k]["wins"] = item_wins(items, score, sign)
    keys = list(curves)
    largest = max(c.shape[0] * c.shape[1] * c.shape[2] for c in curves.values())
    per_chunk = max(1, 2 ** 24 // max(1, n * largest))  # rows x items of float32 at a time
    for lo in range(0, len(keys), per_chunk):
        chunk = keys[lo:lo + per_chunk]
        X = np.concatenate([curves[k].reshape(-1, n) for k in chunk]).astype(np.float32)
        whole: dict[tuple, np.ndarray] = {}
        for idx, W in zip(halves, weights):
            Xh = X[:, idx]
            point, boot = Xh.sum(axis=1), Xh @ W  # column sums: (rows,) and (rows, n_boot)
            at = 0
            for k in chunk:
                T, K, cols, _ = curves[k].shape
                p = point[at:at + T * K * cols].reshape(T, K, cols).astype(float).mean(axis=1)
                b = boot[at:at + T * K * cols].reshape(T, K, cols, n_boot)
                at += T * K * cols
                if K > 1:  # integer counts in float64, divided last: equal sums stay exactly equal (ties)
                    if K not in seed_weights:
                        seed_weights[K] = multinomial_weights(rng, n_boot, K).T.astype(float)
                    b = np.einsum("tkcb,bk->tcb", b.astype(float), seed_weights[K]) / K
                else:
                    b = b[:, 0].astype(float)
                whole[k] = b if k not in whole else whole[k] + b
                out[k]["point"].append(score(p, len(idx)) if len(idx) else np.full(T, np.nan))
                out[k]["boot"].append(score(b, len(idx)).T)
        for k in chunk:
            out[k]["whole"] = score(whole[k], n).T
    return out


def item_wins(items: np.ndarray, score: Callable[[np.ndarray, int], np.ndarray], sign: int) -> np.ndarray:
    """(T, T): [i, j] = the items on which checkpoint j scores above checkpoint i (seed-averaged, as `score`
    signs them; NaN, an undefined item, is a tie). 0/1 correctness takes K + 1 values per item (how many
    seeds got it right), so the counts are K matrix products of level indicators; other scores are compared
    item by item."""
    T, K, cols, n = items.shape
    if items.dtype == np.uint8 and cols == 1:
        right = items[:, :, 0].sum(axis=1, dtype=np.int32)  # (T, n): seeds that got each item right
        wins = sum((right < b).astype(np.float32) @ (right == b).astype(np.float32).T for b in range(1, K + 1))
        wins = np.rint(wins).astype(np.int64)  # [i, j]: items with fewer right at i than at j (exact counts)
        return wins if sign > 0 else wins.T  # a lower-is-better 0/1 metric: reversed
    c = score(items.mean(axis=1), 1)  # (T, n): each item's own value
    return (c[None, :, :] > c[:, None, :]).sum(axis=2)


def decide(steps: np.ndarray, v: np.ndarray, baseline: float, boot: dict | None, a: AnalysisSpec,
           trend: float | None = None) -> dict:
    """Emergence and degradation of one curve: v (T,) seed-averaged values in step order, scored higher-is-better
    (bpc negated, and its baseline); boot: the curve's halves from `bootstrap` (scored the same way), None
    without per-item scores;
    trend: its `trend_p` when already computed (in a batch of curves)."""
    T, alpha, theta, nan = len(v), a.alpha, a.emergence_threshold, float("nan")
    ref = int(np.argmax(v)) if a.emergence_reference == "best" else T - 1
    if trend is None:
        signs = None if boot is None else bootstrap_pair_signs(boot["whole"], alpha, boot["wins"])[None]
        trend = float(trend_p(v[None], a.emergence_reference, signs)[0])
    row = {"reference_step": int(steps[ref]), "trend_p": trend,
           "rise_p": nan, "above_baseline_p": nan, "degradation": nan, "degradation_p": nan}
    if boot is None:  # rows with no per-item scores: point comparisons and the trend test
        rise, above = v[ref] > v[0], v[ref] > baseline
    else:
        (pA, pB), (bA, bB) = boot["point"], boot["boot"]
        vb = boot["whole"]  # (n_boot, T): the whole curve, recomputed per resample
        # the bootstrap is too lenient when few items differ (4 of 1,000 all one way "pass"): the exact sign
        # test over the items that differ must agree
        row["rise_p"] = max(float(np.mean(vb[:, ref] - vb[:, 0] <= 0)), sign_test_greater(boot["wins"])[0, ref])
        row["above_baseline_p"] = float(np.mean(vb[:, ref] - baseline <= 0))
        rise, above = row["rise_p"] < alpha, row["above_baseline_p"] < alpha
        # cross-fitting: the best chosen on one half, best - final measured on the other; both directions averaged
        final, r = T - 1, np.arange(len(bA))
        tA, tB = int(np.argmax(pA)), int(np.argmax(pB))
        row["degradation"] = float((pB[tA] - pB[final] + pA[tB] - pA[final]) / 2)
        d = (bB[r, np.argmax(bA, axis=1)] - bB[:, final] + bA[r, np.argmax(bB, axis=1)] - bA[:, final]) / 2
        row["degradation_p"] = float(np.mean(d <= 0))
        vref = vb[r, np.argmax(vb, axis=1)] if a.emergence_reference == "best" else vb[:, final]
    # all three must hold: the largest p-value is the conjunction's (point comparisons failing: 1)
    ps = [row["trend_p"]] + [row[k] for k in ("rise_p", "above_baseline_p") if not np.isnan(row[k])]
    row["emergence_p"] = max(ps) if (T >= 2 and rise and above) else 1.0
    candidate = row["emergence_p"] < alpha  # emerged once its BH q-value over the task's curves is below alpha too
    for name, normalized in (("emergence_step", False), ("emergence_step_normalized", True)):
        row[name] = float(steps[reach_index(v, v[ref], theta, normalized)]) if candidate else nan
        lo = hi = nan
        if candidate and boot is not None:
            s = steps[reach_index(vb, vref, theta, normalized)]
            lo, hi = percentile_step(s, alpha / 2), percentile_step(s, 1 - alpha / 2)
        row[f"{name}_lo"], row[f"{name}_hi"] = lo, hi
    return row
