"""The paper's claims computed as claims, from the curves' table: (a) acquisition order across tasks, (b) transfer
timing against in-language timing, (c) degradation, (d) no single best checkpoint, (e) the last layer's decline.

One long table (results/findings.parquet): a row per number (finding, task, other_task, scope, layer, src_lang,
tgt_lang, quantity, value) and a row per sentence (quantity "sentence", the words in `text`). A finding that has
nothing to count (nothing emerged, one task, one language) still gets its sentence, saying so.

Families. A finding that counts curves of a subset (a task's in-language curves at one layer, its cross-lingual
pairs at one layer) applies Benjamini-Hochberg to that subset's own p-values: BH over all of a task's curves
controls the false discoveries among all of them, not among a subset's. The findings' own tests (the sign tests
of (a), the regret tests of (d), the layer tests of (e)) are corrected over the finding's family, as each
sentence says. A curve that did not emerge is censored, not "later than any step": orders and timings compare
curves that both emerged, and say how many did not."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from xlp.analysis.curve_table import CurveAnalysis, direction, pairwise_tasks
from xlp.analysis.findings_best import best_checkpoints, emerged_in, layer_decline
from xlp.analysis.findings_script import script_timing
from xlp.analysis.stats import bh_q, sign_test_p
from xlp.tasks.base import Task

COLUMNS = ["finding", "task", "other_task", "scope", "layer", "src_lang", "tgt_lang", "quantity", "value", "text"]
FINDINGS = {"acquisition": "(a) acquisition order", "transfer": "(b) transfer timing", "degradation": "(c) degradation",
            "best": "(d) no single best checkpoint", "layers": "(e) the last layer's decline"}


def _step(x: float) -> str:
    return "did not emerge" if np.isnan(x) else f"{int(x)}"


def _share(k: int, n: int) -> str:
    return f"{k} of {n}" + (f" ({100 * k / n:.0f} %)" if n else "")


def _p(p: float) -> str:
    return "n/a" if np.isnan(p) else f"{p:.2g}"


class _Rows:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, finding: str, task: str, quantity: str, value: float, layer: int = -1, other_task: str = "",
            scope: str = "", src: str = "", tgt: str = "") -> None:
        self.rows.append({"finding": finding, "task": task, "other_task": other_task, "scope": scope,
                          "layer": layer, "src_lang": src, "tgt_lang": tgt, "quantity": quantity,
                          "value": float(value), "text": ""})

    def say(self, finding: str, task: str, text: str, layer: int = -1, other_task: str = "") -> None:
        self.rows.append({"finding": finding, "task": task, "other_task": other_task, "scope": "", "layer": layer,
                          "src_lang": "", "tgt_lang": "", "quantity": "sentence", "value": np.nan, "text": text})


def in_language(em: pd.DataFrame, pairwise: set[str]) -> pd.DataFrame:
    """The in-language curves, of tasks that have one (not those in `pairwise`)."""
    return em[(em.src_lang == em.tgt_lang) & ~em.task.isin(pairwise)]


def _steps(ins: pd.DataFrame, task: str, layer: int, alpha: float) -> pd.Series:
    """In-language emergence step per language of (task, layer) (NaN: censored, did not emerge)."""
    g = ins[(ins.task == task) & (ins.layer == layer)]
    return pd.Series(emerged_in(g, alpha).to_numpy(), index=g.src_lang)


def _acquisition(em: pd.DataFrame, out: _Rows, order: list[str], pairwise: set[str], alpha: float) -> None:
    ins = in_language(em, pairwise)
    present = set(ins.task)
    tasks = [t for t in order if t in present] + sorted(present - set(order))
    for (task, layer), g in ins.groupby(["task", "layer"], sort=False):
        s = _steps(ins, task, layer, alpha).dropna()
        q1, med, q3 = np.percentile(s, [25, 50, 75]) if len(s) else (np.nan,) * 3
        for quantity, v in (("n_languages", len(g)), ("n_emerged", len(s)), ("median_step", med),
                            ("q1_step", q1), ("q3_step", q3)):
            out.add("acquisition", task, quantity, v, layer)
        if layer == ins.loc[ins.task == task, "layer"].max():
            text = (f"{task} (layer {layer}) emerged in {_share(len(s), len(g))} languages"
                    + (f", median step {med:g} (IQR {q1:g}–{q3:g})." if len(s) else ".")
                    + f" Family: BH over the layer's {len(g)} in-language curves.")
            out.say("acquisition", task, text, layer)
    tests = []
    for i, a in enumerate(tasks):
        for b in tasks[i + 1:]:
            layers = sorted(set(ins.loc[ins.task == a, "layer"]) & set(ins.loc[ins.task == b, "layer"]))
            for layer in layers:
                sa, sb = _steps(ins, a, layer, alpha), _steps(ins, b, layer, alpha)
                langs = sa.index.intersection(sb.index)
                sa, sb = sa[langs], sb[langs]
                both = sa.notna() & sb.notna()  # censored: compared only where both emerged
                first, second = int((sa[both] < sb[both]).sum()), int((sb[both] < sa[both]).sum())
                tests.append((a, b, layer, layers, len(langs), both, sa, sb, first, second,
                              sign_test_p(first, second)))
    qs = bh_q(np.array([t[-1] for t in tests], dtype=float)) if tests else []
    for (a, b, layer, layers, n, both, sa, sb, first, second, p), q in zip(tests, qs):
        med_a, med_b = (float(np.median(x.dropna())) if x.notna().any() else np.nan for x in (sa, sb))
        only_a, only_b = int((sa.notna() & sb.isna()).sum()), int((sb.notna() & sa.isna()).sum())
        neither = int((sa.isna() & sb.isna()).sum())
        for quantity, v in (("n_languages", n), ("n_both_emerged", int(both.sum())), ("first_before", first),
                            ("first_after", second), ("ties", int(both.sum()) - first - second),
                            ("only_first_emerged", only_a), ("only_other_emerged", only_b),
                            ("neither_emerged", neither),
                            ("sign_test_p", p), ("sign_test_q", q),
                            ("median_step_first", med_a), ("median_step_other", med_b)):
            out.add("acquisition", a, quantity, v, layer, other_task=b)
        if layer == layers[-1]:
            out.say("acquisition", a, f"{a} emerges before {b} in {first} of the {int(both.sum())} languages where "
                    f"both emerged and after it in {second} ({int(both.sum()) - first - second} ties; two-sided "
                    f"exact sign test p = {_p(p)}, BH q = {_p(q)} over the {len(tests)} task pairs and layers); "
                    f"censored: only {a} emerged in {only_a}, only {b} in {only_b}, neither in {neither} of {n}; "
                    f"median step {_step(med_a)} vs {_step(med_b)} (layer {layer}).", layer, other_task=b)
    if len(tasks) < 2:
        out.say("acquisition", tasks[0] if tasks else "", "One task with in-language curves: no order across tasks.")


def _transfer(em: pd.DataFrame, out: _Rows, pairwise: set[str], alpha: float) -> None:
    cross = em[(em.src_lang != em.tgt_lang) & ~em.task.isin(pairwise)]
    ins = in_language(em, pairwise)
    for (task, layer), g in cross.groupby(["task", "layer"], sort=False):
        alone = _steps(ins, task, layer, alpha)
        g = g[g.src_lang.isin(alone.index) & g.tgt_lang.isin(alone.index)]
        if g.empty:
            continue
        pair = emerged_in(g, alpha).to_numpy()  # BH over these cross-lingual pairs
        src, tgt = alone[g.src_lang].to_numpy(), alone[g.tgt_lang].to_numpy()
        emerged = ~np.isnan(pair)
        known = emerged & ~np.isnan(src) & ~np.isnan(tgt)  # all three emerged: the timing is comparable
        after = known & (pair > np.fmax(src, tgt))
        for s, t, p, a, b, x in zip(g.src_lang, g.tgt_lang, pair, src, tgt, after):
            for quantity, v in (("pair_step", p), ("src_step", a), ("tgt_step", b), ("after_both", x)):
                out.add("transfer", task, quantity, v, layer, src=s, tgt=t)
        n, k, c, m = len(g), int(emerged.sum()), int(known.sum()), int(after.sum())
        for quantity, v in (("n_pairs", n), ("n_emerged", k), ("n_comparable", c), ("n_after_both", m),
                            ("share_after_both", m / c if c else np.nan),
                            ("n_censored", k - c)):
            out.add("transfer", task, quantity, v, layer)
        text = (f"{task} (layer {layer}): {_share(k, n)} source → target pairs emerged cross-lingually (BH over "
                f"these {n} pairs)")
        if k:
            order = np.argsort(np.where(emerged, pair, np.inf), kind="stable")
            e, lt = order[0], order[k - 1]
            out.add("transfer", task, "earliest_step", pair[e], layer, src=g.src_lang.iloc[e], tgt=g.tgt_lang.iloc[e])
            out.add("transfer", task, "latest_step", pair[lt], layer, src=g.src_lang.iloc[lt], tgt=g.tgt_lang.iloc[lt])
            text += (f"; of the {c} where both languages also emerged in-language, {_share(m, c)} after both "
                     f"({k - c} censored: a language that did not emerge); earliest "
                     f"{g.src_lang.iloc[e]} → {g.tgt_lang.iloc[e]} (step {pair[e]:g}), latest "
                     f"{g.src_lang.iloc[lt]} → {g.tgt_lang.iloc[lt]} (step {pair[lt]:g}).")
        if layer == cross.loc[cross.task == task, "layer"].max():
            out.say("transfer", task, text if k else text + ".", layer)


def _degradation(em: pd.DataFrame, out: _Rows, alpha: float, pairwise: set[str]) -> None:
    ins_mask = (em.src_lang == em.tgt_lang) & ~em.task.isin(pairwise)
    cross_mask = (em.src_lang != em.tgt_lang) & ~em.task.isin(pairwise)
    for scope, mask in (("in-language", ins_mask), ("cross-lingual", cross_mask)):
        for (task, layer), g in em[mask].groupby(["task", "layer"], sort=False):
            tested = g[g.degradation_p.notna()]  # BH over this subset (its family), not the task's curves
            q = bh_q(tested.degradation_p.to_numpy(dtype=float))
            sig = tested[(q < alpha) & (tested.degradation.to_numpy(dtype=float) > 0)]
            d = sig.degradation.to_numpy(dtype=float)
            for quantity, v in (("n_curves", len(g)), ("n_tested", len(tested)), ("n_significant", len(sig)),
                                ("median_degradation", np.median(d) if len(d) else np.nan),
                                ("max_degradation", d.max() if len(d) else np.nan)):
                out.add("degradation", task, quantity, v, layer, scope=scope)
            if scope == "in-language" and layer == em.loc[mask & (em.task == task), "layer"].max():
                if tested.empty:
                    out.say("degradation", task, f"{task}: no per-item scores, so no degradation test.", layer)
                    continue
                cross = em[cross_mask & (em.task == task) & (em.layer == layer) & em.degradation_p.notna()]
                qc = bh_q(cross.degradation_p.to_numpy(dtype=float))
                n_cross = int(((qc < alpha) & (cross.degradation.to_numpy(dtype=float) > 0)).sum())
                text = (f"{task} (layer {layer}): the final checkpoint is significantly worse than the best "
                        f"(cross-fitted bootstrap, BH q < {alpha:g} over these {len(tested)} in-language curves) in "
                        f"{_share(len(sig), len(tested))} languages")
                if len(d):
                    text += f", by {np.median(d):.3g} on median (at most {d.max():.3g})"
                if len(cross):
                    text += f"; in {n_cross} of {len(cross)} source → target pairs (BH over those pairs)"
                out.say("degradation", task, text + ".", layer)


def in_language_values(probes: pd.DataFrame, tasks: Mapping[str, Task]) -> pd.DataFrame:
    """In-language value per (task, layer, language, step), averaged over seeds, in the 'higher is better' sense."""
    ins = probes[(probes.src_lang == probes.tgt_lang) & ~probes.task.isin(pairwise_tasks(tasks))]
    c = ins.groupby(["task", "layer", "src_lang", "step", "metric"], sort=True)["value"].mean().reset_index()
    c["score"] = c["value"] * c["task"].map(lambda task: direction(task, tasks)).astype(float)
    return c


def findings_table(probes: pd.DataFrame, curves: CurveAnalysis, tasks: Mapping[str, Task],
                   alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Every finding's numbers and sentences (see the module's docstring) from the curves' analysis (its table
    and bootstrap replicates); `tasks`, the run's by name, give each metric's direction and which tasks have no
    in-language curves; pairs of tasks in their order."""
    out = _Rows()
    emergence = curves.table
    if not emergence.empty and "emerged" in emergence:
        pairwise = pairwise_tasks(tasks)
        values = in_language_values(probes, tasks)
        _acquisition(emergence, out, list(tasks), pairwise, alpha)
        _transfer(emergence, out, pairwise, alpha)
        script_timing(emergence, probes, out, pairwise, alpha, seed)
        _degradation(emergence, out, alpha, pairwise)
        best_checkpoints(emergence, values, curves.boots, out, pairwise, alpha)
        layer_decline(emergence, values, curves.boots, out, pairwise, alpha)
    df = pd.DataFrame(out.rows, columns=COLUMNS)
    return df.astype({"layer": int, "value": float})
