"""One curve's decisions from its per-item scores: emerged (with a bootstrap interval on the step) and the
cross-fitted degradation test. Curves come in (steps T, seeds K, columns k, items n) arrays of per-item
scores: 0/1 correctness, or the columns whose sums give a task's metric (bits and characters for bpc)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from xlp.analysis.stats import (
    boot_p,
    bootstrap_pair_signs,
    multinomial_weights,
    percentile_step,
    reach_index,
    sign_test_greater,
    trend_p,
)
from xlp.config import AnalysisSpec


def _sentences(g: pd.DataFrame, n: int) -> np.ndarray | None:
    """The test items' sentence indices (n,) that every row of a group carries alike (`item_groups`), or None
    where the rows carry none (tasks whose items are independent units, rows of older runs)."""
    if "item_groups" not in g or g["item_groups"].isna().any():
        return None
    first = g["item_groups"].iloc[0]
    if any(b != first for b in g["item_groups"]):
        raise ValueError(f"{g['task'].iloc[0]} on {g['tgt_lang'].iloc[0]}: rows scored on the same {n} test items "
                         "give them different sentences")
    sent = np.frombuffer(first, dtype=np.int32)
    return sent if len(sent) == n else None


def by_sentence(items: np.ndarray, sent: np.ndarray) -> np.ndarray:
    """(T, K, k, n) per-item scores to (T, K, k + 1, S) per-sentence sums, the last column each sentence's
    number of items: the unit a bootstrap resamples, a half holds and a sign test counts is then a sentence."""
    _, inverse, sizes = np.unique(sent, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    sums = np.add.reduceat(items[..., order].astype(np.float32), starts, axis=-1)
    count = np.broadcast_to(sizes.astype(np.float32), (*items.shape[:2], 1, len(sizes)))
    return np.concatenate([sums, count], axis=2)


def per_sentence(value: Callable[[np.ndarray, int], np.ndarray]) -> Callable[[np.ndarray, int], np.ndarray]:
    """A task's metric from per-sentence sums (`by_sentence`): the item count is the last column's sum."""
    return lambda sums, count: value(sums[:-1], sums[-1])


def item_scores(probes: pd.DataFrame) -> dict[tuple, tuple[dict[tuple, np.ndarray], bool]]:
    """Per (task, target, n_test): (per curve (task, layer, source, target) its per-unit scores as (T steps,
    K seeds, k columns, units), whether the units are sentences). A row's `correct` (k = 1, 0/1) or its
    `item_sums` (the k columns whose sums give the metric through the task's `value_from_sums`); where the rows
    say each test item's sentence (`item_groups`), the items are summed per sentence (`by_sentence`: a word's
    errors are not independent of its sentence's); seeds collapsed to one when every seed scored alike."""
    out: dict[tuple, tuple[dict[tuple, np.ndarray], bool]] = {}
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
            sent = _sentences(g, n)
            index = {k: i for i, k in enumerate(zip(g["layer"], g["src_lang"], g["step"], g["seed"]))}
            curves, _ = out.setdefault((task, tgt, n), ({}, sent is not None))
            for (layer, src), c in g.groupby(["layer", "src_lang"], sort=True):
                steps, seeds = np.unique(c["step"]), np.unique(c["seed"])
                at = [[index.get((layer, src, s, k)) for k in seeds] for s in steps]
                if any(i is None for row in at for i in row):
                    continue  # a seed missing at some checkpoint: no paired resampling for this curve
                items = data[np.array(at)]  # (T, K, k, n)
                if (items == items[:, :1]).all():
                    items = items[:, :1]
                curves[(task, int(layer), src, tgt)] = items if sent is None else by_sentence(items, sent)
    return out


def bootstrap(curves: dict[tuple, np.ndarray], n: int, rng: np.random.Generator, n_boot: int,
              value: Callable[[np.ndarray, int], np.ndarray], sign: int = 1) -> dict[tuple, dict]:
    """For curves over the same n test items: a fixed random split of the items into halves A and B, and per
    curve its seed-averaged value on each half (T,), bootstrap replicates of it (n_boot, T) and of the whole
    curve (`whole`). A replicate resamples the items within each half (one draw for every checkpoint: paired)
    and, where seeds differ, the seeds (one draw for every checkpoint too); the metric is recomputed from the
    resampled items' column sums by `value` (the task's `value_from_sums`), times `sign` (-1 where lower is
    better, so every curve is scored higher-is-better). An item is the unit resampled: a sentence where the
    scores are per sentence (`by_sentence`). `wins` (T, T) and `wins_half` (per half): the units on which
    checkpoint j is above i, for the sign tests. One matrix product per chunk of curves."""
    perm = rng.permutation(n)
    halves = [np.sort(perm[: n // 2]), np.sort(perm[n // 2:])]
    weights = [multinomial_weights(rng, n_boot, len(h)) for h in halves]
    seed_weights: dict[int, np.ndarray] = {}
    out: dict[tuple, dict] = {key: {"point": [], "boot": []} for key in curves}

    def score(sums: np.ndarray, count: int) -> np.ndarray:  # sums (T, k, ...) -> signed values (T, ...)
        with np.errstate(divide="ignore", invalid="ignore"):
            return sign * np.asarray(value(np.moveaxis(sums, 1, 0).astype(float), count), dtype=float)

    for k, items in curves.items():  # per pair of checkpoints, the units on which j beats i, per half and all
        out[k]["wins_half"] = [item_wins(items[..., h], score, sign) for h in halves]
        out[k]["wins"] = out[k]["wins_half"][0] + out[k]["wins_half"][1]
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


def cross_fit(points: list[np.ndarray], boots: list[np.ndarray], measure: Callable) -> tuple[float, np.ndarray]:
    """A statistic of a checkpoint chosen on one half of the test units and measured on the other, both ways,
    averaged: `measure(values, choice)` on a half's values (T,) or replicates (n_boot, T) at the other half's
    best (argmax); the point estimate and its bootstrap replicates, the choice redone in every replicate."""
    (pA, pB), (bA, bB) = points, boots
    point = (measure(pB, int(np.argmax(pA))) + measure(pA, int(np.argmax(pB)))) / 2
    return float(point), (measure(bB, np.argmax(bA, axis=1)) + measure(bA, np.argmax(bB, axis=1))) / 2


def _at(values: np.ndarray, choice) -> np.ndarray:
    """values[..., choice] per row: a half's value (or each replicate's) at a checkpoint chosen per row."""
    return values[choice] if values.ndim == 1 else values[np.arange(len(values)), choice]


def degradation_boot(boot: dict) -> tuple[float, np.ndarray]:
    """Cross-fitted best - final (positive: the final is worse) and its bootstrap replicates (n_boot,)."""
    return cross_fit(boot["point"], boot["boot"], lambda v, t: _at(v, t) - v[..., -1])


def decide(steps: np.ndarray, v: np.ndarray, baseline: float, boot: dict | None, a: AnalysisSpec,
           trend: float | None = None, min_effect: float | None = None) -> dict:
    """Emergence and degradation of one curve: v (T,) seed-averaged values in step order, scored higher-is-better
    (bpc negated, and its baseline); boot: the curve's halves from `bootstrap` (scored the same way), None
    without per-item scores; trend: its `trend_p` when already computed (in a batch of curves); min_effect:
    the rise that counts as learning, in the metric's units (default `a.min_effect`).

    The rise (reference - first, by more than min_effect) and above-baseline tests are cross-fitted where the
    reference is the best: the best is chosen on one half of the test units and tested on the other, both ways,
    averaged; the bootstrap redoes the choice in every replicate, and an exact sign test over the units that
    differ between the first and the chosen checkpoint (on the held-out half) must agree."""
    T, alpha, theta, nan = len(v), a.alpha, a.emergence_threshold, float("nan")
    effect = a.min_effect if min_effect is None else min_effect
    best = a.emergence_reference == "best"
    ref = int(np.argmax(v)) if best else T - 1
    if trend is None:
        signs = None if boot is None else bootstrap_pair_signs(boot["whole"], alpha, boot["wins"])[None]
        trend = float(trend_p(v[None], a.emergence_reference, signs)[0])
    row = {"reference_step": int(steps[ref]), "trend_p": trend, "rise": float(v[ref] - v[0]),
           "rise_p": nan, "above_baseline_p": nan, "degradation": nan, "degradation_p": nan}
    if boot is None:  # rows with no per-item scores: point comparisons and the trend test
        rise, above = v[ref] - v[0] > effect, v[ref] > baseline
    else:
        vb = boot["whole"]  # (n_boot, T): the whole curve, recomputed per resample
        if best and T > 1:
            row["rise"], d_rise = cross_fit(boot["point"], boot["boot"], lambda x, t: _at(x, t) - x[..., 0])
            _, d_above = cross_fit(boot["point"], boot["boot"], lambda x, t: _at(x, t) - baseline)
            (pA, pB), (wA, wB) = boot["point"], boot["wins_half"]
            tA, tB = int(np.argmax(pA)), int(np.argmax(pB))
            up, down = wB[0, tA] + wA[0, tB], wB[tA, 0] + wA[tB, 0]
        else:
            d_rise, d_above = vb[:, ref] - vb[:, 0], vb[:, ref] - baseline
            up, down = boot["wins"][0, ref], boot["wins"][ref, 0]
        # the bootstrap is too lenient when few units differ (4 of 1,000 all one way "pass"): the exact sign test
        # over the units that differ must agree
        row["rise_p"] = max(boot_p(d_rise, effect), float(sign_test_greater(np.array([[0, up], [down, 0]]))[0, 1]))
        row["above_baseline_p"] = boot_p(d_above)
        rise, above = row["rise_p"] < alpha, row["above_baseline_p"] < alpha
        row["degradation"], d = degradation_boot(boot)
        row["degradation_p"] = boot_p(d)
        vref = vb[np.arange(len(vb)), np.argmax(vb, axis=1)] if best else vb[:, -1]
    # all three must hold: the largest p-value is the conjunction's (point comparisons failing: 1); a curve
    # already at 0.95 of its reference at the first checkpoint did not emerge within the series
    ps = [row["trend_p"]] + [row[k] for k in ("rise_p", "above_baseline_p") if not np.isnan(row[k])]
    row["emergence_p"] = max(ps) if (T >= 2 and rise and above) else 1.0
    row["at_first"] = bool(reach_index(v, v[ref], theta) == 0)
    candidate = row["emergence_p"] < alpha and not row["at_first"]  # emerged once its BH q-value is below alpha
    for name, normalized in (("emergence_step", False), ("emergence_step_normalized", True)):
        row[name] = float(steps[reach_index(v, v[ref], theta, normalized)]) if candidate else nan
        lo = hi = nan
        if candidate and boot is not None:
            s = steps[reach_index(vb, vref, theta, normalized)]
            lo, hi = percentile_step(s, alpha / 2), percentile_step(s, 1 - alpha / 2)
        row[f"{name}_lo"], row[f"{name}_hi"] = lo, hi
    return row
