"""`xlp compare`: the same curves across runs (pretraining seeds such as MultiBERTs', model sizes such as
Pythia's, or one series probed two ways). Each run's own statistics hold within the run (intervals over its test
items); across runs, a curve's emergence is counted run by run and its step compared, which is the spread over
pretraining runs that no single run can show."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel

from xlp.analysis.curve_table import CURVE_KEYS
from xlp.config import Spec

PER_RUN = ["emerged", "emergence_step", "emergence_step_lo", "emergence_step_hi", "best_step", "best_value",
           "final_value", "degradation", "degradation_significant"]


# what decides a curve's numbers, per spec: comparing runs that differ here compares the settings too
SETTINGS = {
    "analysis": lambda spec: spec.analysis,
    "probe": lambda spec: spec.probe,
    "data (max_train_sentences, max_test_sentences, split_test)":
        lambda spec: (spec.data.max_train_sentences, spec.data.max_test_sentences, spec.data.split_test),
    "pooling": lambda spec: spec.pooling,
}


def differing_settings(specs: list[Spec]) -> list[str]:
    """The SETTINGS in which the runs' specs differ; for a section, with the keys that differ and each run's
    value ("probe (kind: linear, mlp)": a linear and an MLP probe side by side)."""
    out = []
    for what, of in SETTINGS.items():
        values = [of(spec) for spec in specs]
        if all(v == values[0] for v in values[1:]):
            continue
        if isinstance(values[0], BaseModel):
            dumps = [v.model_dump() for v in values]
            keys = [k for k in dumps[0] if any(d[k] != dumps[0][k] for d in dumps[1:])]
            what += " (" + "; ".join(f"{k}: {', '.join(str(d[k]) for d in dumps)}" for k in keys) + ")"
        out.append(what)
    return out


def compare_curves(per_run: pd.DataFrame) -> pd.DataFrame:
    """One row per curve that every run has: in how many runs it emerged, and the median, lowest and highest
    emergence step among those runs; the distinct best checkpoints; in how many runs the final checkpoint is
    significantly worse than the best."""
    n_runs = per_run["run"].nunique()
    counts = per_run.groupby(CURVE_KEYS)["run"].nunique()
    shared = counts[counts == n_runs].index
    rows = []
    for key, g in per_run.set_index(CURVE_KEYS).loc[shared].groupby(level=list(range(len(CURVE_KEYS)))):
        steps = g.loc[g["emerged"].astype(bool), "emergence_step"].to_numpy(dtype=float)
        rows.append({**dict(zip(CURVE_KEYS, key)), "metric": g["metric"].iloc[0], "n_runs": n_runs,
                     "n_emerged": len(steps),
                     "emergence_step_median": float(np.median(steps)) if len(steps) else np.nan,
                     "emergence_step_min": float(steps.min()) if len(steps) else np.nan,
                     "emergence_step_max": float(steps.max()) if len(steps) else np.nan,
                     "n_distinct_best": int(g["best_step"].nunique()),
                     "n_degraded": int(g["degradation_significant"].fillna(False).astype(bool).sum())})
    return pd.DataFrame(rows, columns=CURVE_KEYS + ["metric", "n_runs", "n_emerged", "emergence_step_median",
                                                    "emergence_step_min", "emergence_step_max",
                                                    "n_distinct_best", "n_degraded"])


def summary(compared: pd.DataFrame) -> list[str]:
    """Per task, at its last layer, in-language: a sentence on how the runs agree."""
    lines = []
    ins = compared[compared["src_lang"] == compared["tgt_lang"]]
    for task, g in ins.groupby("task", sort=False):
        g = g[g["layer"] == g["layer"].max()]
        n, n_runs = len(g), int(g["n_runs"].iloc[0])
        every = int((g["n_emerged"] == n_runs).sum())
        none = int((g["n_emerged"] == 0).sum())
        line = (f"{task} (layer {int(g['layer'].iloc[0])}): emerged in each of the {n_runs} runs in {every} of {n} "
                f"languages, in none of them in {none}")
        spread = (g["emergence_step_max"] - g["emergence_step_min"])[g["n_emerged"] >= 2]
        if len(spread):
            worst = g.loc[spread.idxmax()]
            line += (f"; where it emerged in two runs or more, its step differs across runs by up to "
                     f"{spread.max():.0f} steps ({worst['src_lang']}: {worst['emergence_step_min']:.0f}–"
                     f"{worst['emergence_step_max']:.0f})")
        degraded = int((g["n_degraded"] > 0).sum())
        lines.append(line + f"; the final checkpoint is significantly worse than the best in at least one run in "
                            f"{degraded} of {n} languages.")
    return lines
