"""Learning-curve statistics: emergence, best checkpoint, final-vs-best (definitions in DESIGN.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from xlp.tasks import metric_direction

CURVE_KEYS = ["task", "layer", "src_lang", "tgt_lang"]


def direction(metric: str) -> int:
    """+1 where higher is better, -1 where lower is (the curve is scored as -value, reported as value)."""
    return metric_direction(metric)


def curve_stats(steps: np.ndarray, values: np.ndarray, threshold: float = 0.95) -> dict:
    """Statistics of one curve (values already averaged over seeds), steps ascending.

    emergence_step: first step whose value reaches threshold x best value.
    emergence_step_normalized: first step where (value - first) / (best - first) reaches threshold.
    best_step: argmax, earliest on ties. final_minus_best: final value - best value (<= 0).
    """
    steps, values = np.asarray(steps), np.asarray(values, dtype=float)
    best_i = int(np.argmax(values))
    best, first, final = values[best_i], values[0], values[-1]
    reach = values >= threshold * best if best >= 0 else values >= best / threshold
    gain = best - first
    norm = (values - first) / gain >= threshold if gain > 0 else np.ones_like(values, dtype=bool)
    return {
        "n_steps": len(steps),
        "first_step": int(steps[0]), "first_value": float(first),
        "best_step": int(steps[best_i]), "best_value": float(best),
        "emergence_step": int(steps[np.argmax(reach)]),
        "emergence_step_normalized": int(steps[np.argmax(norm)]),
        "final_step": int(steps[-1]), "final_value": float(final),
        "final_minus_best": float(final - best),
    }


def emergence_table(probes: pd.DataFrame, threshold: float = 0.95) -> pd.DataFrame:
    """One row per (task, layer, source, target) curve."""
    if probes.empty:
        return pd.DataFrame(columns=CURVE_KEYS + ["metric", "n_steps", "emergence_step", "best_step"])
    curves = (probes.groupby(CURVE_KEYS + ["metric", "step"], sort=True)
              .agg(value=("value", "mean"), baseline=("baseline", "mean"))
              .reset_index())
    rows = []
    for key, c in curves.groupby(CURVE_KEYS + ["metric"], sort=True):
        c = c.sort_values("step")
        sign = direction(key[-1])
        stats = curve_stats(c["step"].to_numpy(), sign * c["value"].to_numpy(), threshold)
        for field in ("first_value", "best_value", "final_value", "final_minus_best"):
            stats[field] *= sign  # back to the metric's units: for bpc, final_minus_best > 0 is a loss
        rows.append({**dict(zip(CURVE_KEYS + ["metric"], key)), **stats,
                     "baseline": float(c["baseline"].mean()), "threshold": threshold})
    return pd.DataFrame(rows)


def paired_bootstrap_p(correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> float:
    """One-sided paired bootstrap over test items: the probability that a's mean score is not
    above b's when the items are resampled. Inputs are per-item scores in [0, 1] (seed averages).

    The paired differences take few distinct values, so resampling n items is a multinomial draw
    over those values: exact, and O(n_boot) instead of O(n_boot * n).
    """
    d = np.asarray(correct_a, dtype=float) - np.asarray(correct_b, dtype=float)
    if not len(d):
        return float("nan")
    values, counts = np.unique(np.round(d, 9), return_counts=True)
    draws = np.random.default_rng(seed).multinomial(len(d), counts / len(d), size=n_boot)
    return float(np.mean(draws @ values / len(d) <= 0))


def unpack_correct(packed: bytes, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=n).astype(bool)


def degradation_tests(probes: pd.DataFrame, emergence: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Add degradation_p (paired bootstrap, best vs final checkpoint, over test items) and
    degradation_significant (final below best with p < alpha) to the emergence table."""
    if emergence.empty or "correct" not in probes:
        return emergence.assign(degradation_p=np.nan, degradation_significant=False)
    items = {}
    for key, g in probes[probes["correct"].notna()].groupby(CURVE_KEYS + ["step"], sort=False):
        n = int(g["n_test"].iloc[0])
        items[key] = np.mean([unpack_correct(c, n) for c in g["correct"]], axis=0)
    p_values = []
    for r in emergence.itertuples(index=False):
        key = (r.task, r.layer, r.src_lang, r.tgt_lang)
        best, final = items.get((*key, r.best_step)), items.get((*key, r.final_step))
        if r.best_step == r.final_step:
            p_values.append(1.0)
        elif best is None or final is None:  # no per-item scores (bpc): no test
            p_values.append(np.nan)
        else:
            p_values.append(paired_bootstrap_p(best, final))
    out = emergence.assign(degradation_p=p_values)
    worse = out.final_minus_best * out.metric.map(direction) < 0
    out["degradation_significant"] = worse & (out.degradation_p < alpha)
    return out


def best_layers(probes: pd.DataFrame) -> pd.DataFrame:
    """Per (task, language, step), in-language: the best layer (lowest on ties) and the last layer's value."""
    ins = probes[probes.src_lang == probes.tgt_lang]
    if ins.empty:
        return pd.DataFrame(columns=["task", "lang", "step", "best_layer", "best_layer_value"])
    curve = ins.groupby(["task", "src_lang", "step", "layer"], sort=True).value.mean().reset_index()
    metric_of = ins.groupby("task")["metric"].first().to_dict() if "metric" in ins else {}
    rows = []
    for (task, lang, step), g in curve.groupby(["task", "src_lang", "step"], sort=True):
        g = g.sort_values("layer")
        i = int(np.argmax(g.value.to_numpy() * direction(metric_of.get(task, ""))))
        rows.append({"task": task, "lang": lang, "step": step, "best_layer": int(g.layer.iloc[i]),
                     "best_layer_value": float(g.value.iloc[i]), "last_layer": int(g.layer.iloc[-1]),
                     "last_layer_value": float(g.value.iloc[-1])})
    out = pd.DataFrame(rows)
    # the v2 finding: the last layer's value at the final checkpoint minus its value at its own best step
    for (task, lang), g in out.groupby(["task", "lang"], sort=False):
        sign = direction(metric_of.get(task, ""))
        best = g.loc[(sign * g.last_layer_value).idxmax()]
        out.loc[g.index, "last_layer_best_step"] = int(best.step)
        out.loc[g.index, "last_layer_final_minus_best"] = g.last_layer_value.iloc[-1] - best.last_layer_value
    return out.astype({"last_layer_best_step": int})
