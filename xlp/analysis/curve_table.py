"""Learning-curve statistics: emergence, best checkpoint, degradation, layers (definitions in DESIGN.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd

from xlp.analysis.curves import bootstrap, decide, item_scores, per_sentence
from xlp.analysis.stats import (
    MAX_ORDERS,
    MONTE_CARLO,
    bh_q,
    bootstrap_pair_signs,
    pair_signs,
    stable_rng,
    trend_p,
)
from xlp.config import AnalysisSpec
from xlp.tasks.base import Task

CURVE_KEYS = ["task", "layer", "src_lang", "tgt_lang"]
CURVE_COLUMNS = CURVE_KEYS + [
    "metric", "n_steps", "baseline", "first_step", "first_value", "best_step", "best_value", "final_step",
    "final_value", "final_minus_best", "threshold", "reference", "reference_step", "trend_p", "rise", "rise_p",
    "above_baseline_p", "emergence_p", "emergence_q", "emerged",
    "emergence_step", "emergence_step_lo", "emergence_step_hi",
    "emergence_step_normalized", "emergence_step_normalized_lo", "emergence_step_normalized_hi",
    "degradation", "degradation_p", "degradation_q", "degradation_significant",
    "best_tokens", "emergence_tokens", "emergence_tokens_lo", "emergence_tokens_hi"]
TOKEN_COLUMNS = {"best_tokens": "best_step", "emergence_tokens": "emergence_step",
                 "emergence_tokens_lo": "emergence_step_lo", "emergence_tokens_hi": "emergence_step_hi"}


def run_task(name: str, tasks: Mapping[str, Task]) -> Task | type[Task]:
    """The run's task of that name; for one the run does not have (rows of an older run), the Task base class:
    higher is better, the share of items correct, not pairwise."""
    return tasks.get(name, Task)


def direction(task: str, tasks: Mapping[str, Task]) -> int:
    """+1 where the task's metric is higher-is-better, -1 where lower is (the curve is scored as -value,
    reported as value)."""
    return 1 if run_task(task, tasks).higher_is_better else -1


def pairwise_tasks(tasks: Mapping[str, Task]) -> set[str]:
    """The run's tasks whose in-language values are trivial (retrieval): their curves use the other languages."""
    return {name for name, task in tasks.items() if task.pairwise_only}


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


@dataclass
class CurveAnalysis:
    """The curves' table with what the findings test further: `table`, every column of CURVE_COLUMNS plus
    `candidate_step` (the emergence step of every curve whose own p-value is below alpha, before BH) and
    `at_first`; `boots`, per curve key, its halves and bootstrap replicates (`curves.bootstrap`), the curves
    of one (task, target, test set) sharing their resamples."""
    table: pd.DataFrame
    boots: dict[tuple, dict] = field(default_factory=dict)


def analyse_curves(probes: pd.DataFrame, analysis: AnalysisSpec, tasks: Mapping[str, Task]) -> pd.DataFrame:
    """One row per (task, layer, source, target) curve: its point statistics, whether it emerged (with the
    emergence step and its bootstrap interval) and the cross-fitted degradation test, BH q-values per task.
    `tasks` (the run's, by name) give each metric's direction and how it is recomputed from item sums."""
    return curve_analysis(probes, analysis, tasks).table[CURVE_COLUMNS]


def _trends(groups: list, a: AnalysisSpec, max_orders: np.ndarray | None = None, rows=None) -> np.ndarray:
    """trend_p of the given curves, one batch per number of checkpoints."""
    rows = list(range(len(groups))) if rows is None else list(rows)
    out = np.ones(len(rows))
    for T in {len(groups[i][1]) for i in rows}:
        at = [j for j, i in enumerate(rows) if len(groups[i][1]) == T]
        out[at] = trend_p(np.stack([groups[rows[j]][2] for j in at]), a.emergence_reference,
                          np.stack([groups[rows[j]][5] for j in at]),
                          MONTE_CARLO if max_orders is None else max_orders[[rows[j] for j in at]])
    return out


MapParts = Callable[[Callable[[pd.DataFrame], tuple[list[dict], dict]], list[pd.DataFrame]], list]


def curve_analysis(probes: pd.DataFrame, analysis: AnalysisSpec, tasks: Mapping[str, Task],
                   map_parts: MapParts | None = None) -> CurveAnalysis:
    """`analyse_curves`, with the bootstrap replicates and candidate steps the findings test further.

    The rows are cut into parts, one per (task, target): each part's curves are decided on their own
    (`analyse_part`), by `map_parts(function, parts)` (default: here, one after the other; the run layer passes
    Ray tasks, which keep only the in-language bootstraps the findings read), so the results are the same bytes
    however the parts run; BH and the adaptive trend test's second round then take the whole run's curves."""
    a = analysis
    if probes.empty:
        return CurveAnalysis(pd.DataFrame(columns=CURVE_COLUMNS + ["candidate_step", "at_first"]))
    parts = [g for _, g in probes.groupby(["task", "tgt_lang"], sort=True)]
    run = map_parts or (lambda f, xs: [f(x) for x in xs])
    keep = "all" if map_parts is None else "in_language"
    done = run(partial(analyse_part, analysis=a, tasks=tasks, keep=keep), parts)
    rows = sorted((r for part_rows, _ in done for r in part_rows), key=_curve_key)
    boots = {k: b for _, part_boots in done for k, b in part_boots.items()}
    out = pd.DataFrame(rows)
    # adaptive Monte Carlo: where BH would be stopped by the trend test's floor (1/1000), more random orders for
    # the curves whose trend p-value is at it and is their largest, enough to resolve alpha x k / m (k: BH's
    # rejections, m: the family)
    again: dict[tuple, int] = {}
    for _, g in out.groupby("task", sort=False):
        m, k = len(g), int((bh_q(g["emergence_p"].to_numpy()) < a.alpha).sum())
        # no finer than the bootstrap's own floor 1 / (B + 1): emergence_p is the largest of the three
        need = int(min(MAX_ORDERS, np.ceil(2 * m / (a.alpha * max(k, 1))), 2 * (a.bootstrap + 1)))
        binding = g["trend_p"] >= g[["rise_p", "above_baseline_p"]].max(axis=1).fillna(0)  # the largest p
        floor = g.index[(g["trend_p"] * MONTE_CARLO <= 10) & (g["emergence_p"] < a.alpha) & binding
                        & (g["n_steps"] > 6)]  # up to 6 checkpoints the test is exact
        if need > MONTE_CARLO and len(floor):
            again.update({_curve_key(rows[i]): need for i in floor})
    if again:
        redo = {(key[0], key[3]) for key in again}
        redone = run(partial(analyse_part, analysis=a, tasks=tasks, keep="none", again=again),
                     [p for p in parts if (p["task"].iloc[0], p["tgt_lang"].iloc[0]) in redo])
        replaced = {_curve_key(r): r for part_rows, _ in redone for r in part_rows}
        rows = [replaced.get(_curve_key(r), r) for r in rows]
    out = pd.DataFrame(rows)
    out["degradation_q"] = out["emergence_q"] = np.nan
    for _, g in out.groupby("task", sort=False):  # the family: every test of the task in the run
        out.loc[g.index, "degradation_q"] = bh_q(g["degradation_p"].to_numpy())
        out.loc[g.index, "emergence_q"] = bh_q(g["emergence_p"].to_numpy())
    out["emerged"] = (out["emergence_q"] < a.alpha) & ~out["at_first"].astype(bool)
    out["candidate_step"] = out["emergence_step"]
    steps = [c for c in CURVE_COLUMNS if c.startswith("emergence_step")]
    out.loc[~out["emerged"], steps] = np.nan
    out["degradation_significant"] = (out["degradation_q"] < a.alpha) & (out["degradation"] > 0)
    tokens = tokens_by_step(probes)
    for col, step_col in TOKEN_COLUMNS.items():  # the same checkpoints, as tokens seen where every one says
        out[col] = out[step_col].map(tokens) if tokens is not None else np.nan
    return CurveAnalysis(out[CURVE_COLUMNS + ["candidate_step", "at_first"]], boots)


def _curve_key(row: dict) -> tuple:
    return tuple(row[k] for k in CURVE_KEYS + ["metric"])


def analyse_part(probes: pd.DataFrame, analysis: AnalysisSpec, tasks: Mapping[str, Task], keep: str = "all",
                 again: Mapping[tuple, int] | None = None) -> tuple[list[dict], dict[tuple, dict]]:
    """The curves of a part of the rows that holds whole (task, target) groups: each curve's row and its bootstrap
    (`keep`: "all", "in_language", the ones the findings read, or "none"). With `again` (curve key -> random
    orders), only the rows of those curves, their trend tests redone with that many orders."""
    a = analysis
    curves = (probes.groupby(CURVE_KEYS + ["metric", "step"], sort=True)
              .agg(value=("value", "mean"), baseline=("baseline", "mean")).reset_index())
    boots: dict[tuple, dict] = {}
    for (task, tgt, n), (group, sentences) in item_scores(probes).items():
        value = run_task(task, tasks).value_from_sums
        boots.update(bootstrap(group, next(iter(group.values())).shape[-1] if group else n,
                               stable_rng(a.seed, task, tgt, n), a.bootstrap,
                               value=per_sentence(value) if sentences else value, sign=direction(task, tasks)))
    groups = []
    for key, c in curves.groupby(CURVE_KEYS + ["metric"], sort=True):
        steps, v = c["step"].to_numpy(), direction(key[0], tasks) * c["value"].to_numpy()
        b = boots.get(tuple(key[:4]))
        if b is not None and len(b["point"][0]) != len(steps):
            b = None  # per-item scores at only some checkpoints
        # which checkpoints differ beyond the noise: the trend test counts only those differences
        signs = pair_signs(v[None])[0] if b is None else bootstrap_pair_signs(b["whole"], a.alpha, b["wins"])
        groups.append((key, steps, v, c["baseline"].mean(), b, signs))
    if again is not None:
        at = [i for i, g in enumerate(groups) if tuple(g[0]) in again]
        orders = np.array([again.get(tuple(g[0]), MONTE_CARLO) for g in groups])
        return [_row(*groups[i][:5], a, tasks, float(p)) for i, p in zip(at, _trends(groups, a, orders, at))], {}
    rows = [_row(key, steps, v, baseline, b, a, tasks, float(trend))
            for (key, steps, v, baseline, b, _), trend in zip(groups, _trends(groups, a))]
    kept = {k: b for k, b in boots.items() if keep == "all" or (keep == "in_language" and k[2] == k[3])}
    return rows, kept


def _row(key, steps, v, baseline, b, a: AnalysisSpec, tasks: Mapping[str, Task], trend: float) -> dict:
    sign = direction(key[0], tasks)
    stats = curve_stats(steps, v, a.emergence_threshold)
    for field_ in ("first_value", "best_value", "final_value", "final_minus_best"):
        stats[field_] = sign * stats[field_] + 0.0  # the metric's units (bpc: final_minus_best > 0 is a loss); no -0
    decided = decide(steps, v, sign * baseline, b, a, trend, a.effect(key[0]))
    return {**dict(zip(CURVE_KEYS + ["metric"], key)), **stats, **decided, "baseline": float(baseline),
            "threshold": a.emergence_threshold, "reference": a.emergence_reference}


SEED_MEAN_KEYS = ["task", "metric", "layer", "src_lang", "tgt_lang", "step", "checkpoint"]


def seed_curves(probes: pd.DataFrame) -> pd.DataFrame:
    """Each (task, layer, source, target) per step averaged over probe seeds (`value`), with the seeds' spread
    (`value_min`, `value_max`), the baseline and how many seeds."""
    keys = [k for k in SEED_MEAN_KEYS if k in probes]
    return probes.groupby(keys, sort=True, dropna=False).agg(
        value=("value", "mean"), value_min=("value", "min"), value_max=("value", "max"),
        baseline=("baseline", "mean"), seeds=("seed", "nunique")).reset_index()


def tokens_by_step(probes: pd.DataFrame) -> pd.Series | None:
    """Tokens seen at each step of the run, if every checkpoint's name or metadata gives them."""
    if "tokens" not in probes:
        return None
    tokens = pd.to_numeric(probes.groupby("step")["tokens"].first(), errors="coerce")
    return None if tokens.isna().any() else tokens.astype(float)


def emergence_table(probes: pd.DataFrame, tasks: Mapping[str, Task], threshold: float = 0.95,
                    **analysis) -> pd.DataFrame:
    """analyse_curves with the analysis settings as keywords (emergence_reference, alpha, bootstrap, seed)."""
    return analyse_curves(probes, AnalysisSpec(emergence_threshold=threshold, **analysis), tasks)


def paired_bootstrap_p(correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> float:
    """One-sided paired bootstrap over test items: the probability that a's mean score is not
    above b's when the items are resampled, (b + 1) / (B + 1). Inputs are per-item scores in [0, 1] (seed
    averages) of independent items (the reducer resamples sentences; this helper, items).

    The paired differences take few distinct values, so resampling n items is a multinomial draw
    over those values: exact, and O(n_boot) instead of O(n_boot * n).
    """
    d = np.asarray(correct_a, dtype=float) - np.asarray(correct_b, dtype=float)
    if not len(d):
        return float("nan")
    values, counts = np.unique(np.round(d, 9), return_counts=True)
    draws = np.random.default_rng(seed).multinomial(len(d), counts / len(d), size=n_boot)
    return float((np.sum(draws @ values / len(d) <= 0) + 1) / (n_boot + 1))  # never 0


def unpack_correct(packed: bytes, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=n).astype(bool)


def best_layers(probes: pd.DataFrame, tasks: Mapping[str, Task]) -> pd.DataFrame:
    """Per (task, language, step), in-language: the best layer (lowest on ties) and the last layer's value."""
    ins = probes[probes.src_lang == probes.tgt_lang]
    if ins.empty:
        return pd.DataFrame(columns=["task", "lang", "step", "best_layer", "best_layer_value"])
    curve = ins.groupby(["task", "src_lang", "step", "layer"], sort=True).value.mean().reset_index()
    rows = []
    for (task, lang, step), g in curve.groupby(["task", "src_lang", "step"], sort=True):
        g = g.sort_values("layer")
        i = int(np.argmax(g.value.to_numpy() * direction(task, tasks)))
        rows.append({"task": task, "lang": lang, "step": step, "best_layer": int(g.layer.iloc[i]),
                     "best_layer_value": float(g.value.iloc[i]), "last_layer": int(g.layer.iloc[-1]),
                     "last_layer_value": float(g.value.iloc[-1])})
    out = pd.DataFrame(rows)
    # the v2 finding: the last layer's value at the final checkpoint minus its value at its own best step
    for (task, _lang), g in out.groupby(["task", "lang"], sort=False):
        sign = direction(task, tasks)
        best = g.loc[(sign * g.last_layer_value).idxmax()]
        out.loc[g.index, "last_layer_best_step"] = int(best.step)
        out.loc[g.index, "last_layer_final_minus_best"] = g.last_layer_value.iloc[-1] - best.last_layer_value
    return out.astype({"last_layer_best_step": int})
