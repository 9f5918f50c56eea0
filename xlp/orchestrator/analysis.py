"""Learning-curve statistics: emergence, best checkpoint, final-vs-best (definitions in DESIGN.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd

CURVE_KEYS = ["task", "layer", "src_lang", "tgt_lang"]


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
              .agg(value=("value", "mean"), seed_std=("value", "std"), baseline=("baseline", "mean"))
              .reset_index())
    rows = []
    for key, c in curves.groupby(CURVE_KEYS + ["metric"], sort=True):
        c = c.sort_values("step")
        stats = curve_stats(c["step"].to_numpy(), c["value"].to_numpy(), threshold)
        rows.append({**dict(zip(CURVE_KEYS + ["metric"], key)), **stats,
                     "baseline": float(c["baseline"].mean()), "threshold": threshold})
    return pd.DataFrame(rows)
