"""The paper's claims computed as claims, from the curves' table: (a) acquisition order across tasks, (b) transfer
timing against in-language timing, (c) degradation, (d) no single best checkpoint, (e) the last layer's decline.

One long table (results/findings.parquet): a row per number (finding, task, other_task, scope, layer, src_lang,
tgt_lang, quantity, value) and a row per sentence (quantity "sentence", the words in `text`). A finding that has
nothing to count (nothing emerged, one task, one language) still gets its sentence, saying so."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from xlp.analysis.curve_table import direction, pairwise_tasks
from xlp.analysis.stats import sign_test_p
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


def _steps_or_inf(g: pd.DataFrame) -> pd.Series:
    """Emergence step per language, +inf where it did not emerge (later than any checkpoint)."""
    return g.set_index("src_lang")["emergence_step"].astype(float).fillna(np.inf)


def _acquisition(em: pd.DataFrame, out: _Rows, order: list[str], pairwise: set[str]) -> None:
    ins = in_language(em, pairwise)
    present = set(ins.task)
    tasks = [t for t in order if t in present] + sorted(present - set(order))
    for (task, layer), g in ins.groupby(["task", "layer"], sort=False):
        s = g.loc[g.emerged.astype(bool), "emergence_step"].astype(float)
        q1, med, q3 = np.percentile(s, [25, 50, 75]) if len(s) else (np.nan,) * 3
        for quantity, v in (("n_languages", len(g)), ("n_emerged", len(s)), ("median_step", med),
                            ("q1_step", q1), ("q3_step", q3)):
            out.add("acquisition", task, quantity, v, layer)
        if layer == ins.loc[ins.task == task, "layer"].max():
            text = (f"{task} (layer {layer}) emerged in {_share(len(s), len(g))} languages"
                    + (f", median step {med:g} (IQR {q1:g}–{q3:g})." if len(s) else "."))
            out.say("acquisition", task, text, layer)
    for i, a in enumerate(tasks):
        for b in tasks[i + 1:]:
            layers = sorted(set(ins.loc[ins.task == a, "layer"]) & set(ins.loc[ins.task == b, "layer"]))
            for layer in layers:
                sa = _steps_or_inf(ins[(ins.task == a) & (ins.layer == layer)])
                sb = _steps_or_inf(ins[(ins.task == b) & (ins.layer == layer)])
                langs = sa.index.intersection(sb.index)
                sa, sb = sa[langs], sb[langs]
                first, second = int((sa < sb).sum()), int((sb < sa).sum())
                p = sign_test_p(first, second)
                med_a, med_b = (float(np.median(x[np.isfinite(x)])) if np.isfinite(x).any() else np.nan
                                for x in (sa, sb))
                for quantity, v in (("n_languages", len(langs)), ("first_before", first), ("first_after", second),
                                    ("ties", len(langs) - first - second), ("sign_test_p", p),
                                    ("median_step_first", med_a), ("median_step_other", med_b)):
                    out.add("acquisition", a, quantity, v, layer, other_task=b)
                if layer == layers[-1]:
                    neither = int((~np.isfinite(sa) & ~np.isfinite(sb)).sum())
                    out.say("acquisition", a, f"{a} emerges before {b} in {first} of {len(langs)} languages and "
                            f"after it in {second} (sign test p = {_p(p)}; {len(langs) - first - second} ties, "
                            f"{neither} where neither emerged); median step {_step(med_a)} vs {_step(med_b)} "
                            f"(layer {layer}).", layer, other_task=b)
    if len(tasks) < 2:
        out.say("acquisition", tasks[0] if tasks else "", "One task with in-language curves: no order across tasks.")


def _transfer(em: pd.DataFrame, out: _Rows, pairwise: set[str]) -> None:
    cross = em[(em.src_lang != em.tgt_lang) & ~em.task.isin(pairwise)]
    ins = in_language(em, pairwise)
    for (task, layer), g in cross.groupby(["task", "layer"], sort=False):
        alone = _steps_or_inf(ins[(ins.task == task) & (ins.layer == layer)])
        g = g[g.src_lang.isin(alone.index) & g.tgt_lang.isin(alone.index)]
        if g.empty:
            continue
        pair = g.emergence_step.astype(float).to_numpy()
        src, tgt = alone[g.src_lang].to_numpy(), alone[g.tgt_lang].to_numpy()
        emerged = ~np.isnan(pair)
        after = emerged & (pair > np.maximum(src, tgt))
        for s, t, p, a, b, x in zip(g.src_lang, g.tgt_lang, pair, src, tgt, after):
            for quantity, v in (("pair_step", p), ("src_step", a), ("tgt_step", b), ("after_both", x)):
                out.add("transfer", task, quantity, np.nan if np.isinf(v) else v, layer, src=s, tgt=t)
        n, k, m = len(g), int(emerged.sum()), int(after.sum())
        for quantity, v in (("n_pairs", n), ("n_emerged", k), ("n_after_both", m), ("share_after_both", m / n),
                            ("share_after_both_of_emerged", m / k if k else np.nan)):
            out.add("transfer", task, quantity, v, layer)
        text = f"{task} (layer {layer}): {_share(k, n)} source → target pairs emerged cross-lingually"
        if k:
            order = np.argsort(np.where(emerged, pair, np.inf), kind="stable")
            e, lt = order[0], order[k - 1]
            out.add("transfer", task, "earliest_step", pair[e], layer, src=g.src_lang.iloc[e], tgt=g.tgt_lang.iloc[e])
            out.add("transfer", task, "latest_step", pair[lt], layer, src=g.src_lang.iloc[lt], tgt=g.tgt_lang.iloc[lt])
            text += (f", {_share(m, n)} after both of their languages had emerged in-language; earliest "
                     f"{g.src_lang.iloc[e]} → {g.tgt_lang.iloc[e]} (step {pair[e]:g}), latest "
                     f"{g.src_lang.iloc[lt]} → {g.tgt_lang.iloc[lt]} (step {pair[lt]:g}).")
        if layer == cross.loc[cross.task == task, "layer"].max():
            out.say("transfer", task, text if k else text + ".", layer)


def _degradation(em: pd.DataFrame, out: _Rows, alpha: float, pairwise: set[str]) -> None:
    ins_mask = (em.src_lang == em.tgt_lang) & ~em.task.isin(pairwise)
    cross_mask = (em.src_lang != em.tgt_lang) & ~em.task.isin(pairwise)
    for scope, mask in (("in-language", ins_mask), ("cross-lingual", cross_mask)):
        for (task, layer), g in em[mask].groupby(["task", "layer"], sort=False):
            tested = g[g.degradation_p.notna()]
            sig = tested[tested.degradation_significant.astype(bool)]
            d = sig.degradation.to_numpy(dtype=float)
            for quantity, v in (("n_curves", len(g)), ("n_tested", len(tested)), ("n_significant", len(sig)),
                                ("median_degradation", np.median(d) if len(d) else np.nan),
                                ("max_degradation", d.max() if len(d) else np.nan)):
                out.add("degradation", task, quantity, v, layer, scope=scope)
            if scope == "in-language" and layer == em.loc[mask & (em.task == task), "layer"].max():
                if tested.empty:
                    out.say("degradation", task, f"{task}: no per-item scores, so no degradation test.", layer)
                    continue
                cross = em[cross_mask & (em.task == task) & (em.layer == layer)]
                n_cross = int(cross.degradation_significant.astype(bool).sum())
                text = (f"{task} (layer {layer}): the final checkpoint is significantly worse than the best "
                        f"(cross-fitted, BH q < {alpha:g}) in {_share(len(sig), len(tested))} languages")
                if len(d):
                    text += f", by {np.median(d):.3g} on median (at most {d.max():.3g})"
                if len(cross):
                    text += f"; in {n_cross} of {len(cross)} source → target pairs"
                out.say("degradation", task, text + ".", layer)


def _curves(probes: pd.DataFrame, tasks: Mapping[str, Task]) -> pd.DataFrame:
    """In-language value per (task, layer, language, step), averaged over seeds, in the 'higher is better' sense."""
    ins = probes[(probes.src_lang == probes.tgt_lang) & ~probes.task.isin(pairwise_tasks(tasks))]
    c = ins.groupby(["task", "layer", "src_lang", "step", "metric"], sort=True)["value"].mean().reset_index()
    c["score"] = c["value"] * c["task"].map(lambda task: direction(task, tasks)).astype(float)
    return c


def _best(em: pd.DataFrame, curves: pd.DataFrame, out: _Rows, pairwise: set[str]) -> None:
    ins = in_language(em, pairwise)
    for (task, layer), g in curves.groupby(["task", "layer"], sort=False):
        wide = g.pivot(index="src_lang", columns="step", values="score").dropna(axis=1)
        if wide.empty:
            continue
        e = ins[(ins.task == task) & (ins.layer == layer)].set_index("src_lang").loc[wide.index]
        n = len(wide)
        best = wide.idxmax(axis=1)  # steps ascend: the earliest on ties
        avg = wide.mean(axis=0).idxmax()
        regret = wide.max(axis=1) - wide[avg]
        tested = e[e.degradation_p.notna()]
        holds = int((~tested.degradation_significant.astype(bool)).sum())
        at_final = int((best == wide.columns[-1]).sum())
        for lang, r in regret.items():
            out.add("best", task, "regret", r, layer, src=lang, tgt=lang)
            out.add("best", task, "best_step", best[lang], layer, src=lang, tgt=lang)
        for quantity, v in (("n_languages", n), ("n_distinct_best", best.nunique()),
                            ("share_best_is_final", at_final / n), ("n_tested", len(tested)),
                            ("share_final_not_significantly_worse", holds / len(tested) if len(tested) else np.nan),
                            ("avg_best_step", avg), ("median_regret", regret.median()), ("max_regret", regret.max())):
            out.add("best", task, quantity, v, layer)
        if layer == curves.loc[curves.task == task, "layer"].max():
            text = (f"{task} (layer {layer}): the {n} languages have {best.nunique()} distinct best checkpoints; "
                    f"the best is the final checkpoint in {_share(at_final, n)}")
            if len(tested):
                text += f", and the final is not significantly worse than the best in {_share(holds, len(tested))}"
            text += (f"; under the one checkpoint best on average (step {avg}) the median regret is "
                     f"{regret.median() + 0.0:.3g} (largest {regret.max() + 0.0:.3g}"
                     + (f", {regret.idxmax()})." if regret.max() > 0 else ")."))
            out.say("best", task, text, layer)


def _layers(em: pd.DataFrame, curves: pd.DataFrame, out: _Rows, pairwise: set[str]) -> None:
    ins = in_language(em, pairwise)
    for task, g in ins.groupby("task", sort=False):
        last = int(g.layer.max())
        if g.layer.nunique() < 2:
            continue
        sig = g.pivot(index="src_lang", columns="layer", values="degradation_significant").astype(bool)
        tested = g.pivot(index="src_lang", columns="layer", values="degradation_p").notna().all(axis=1)
        sig = sig[tested]
        declines = sig[last] & ~sig.drop(columns=last).all(axis=1)
        c = curves[curves.task == task]
        mean = c.groupby(["step", "layer"])["score"].mean().unstack("layer")
        first_step, final_step = mean.index[0], mean.index[-1]
        best_first, best_final = int(mean.loc[first_step].idxmax()), int(mean.loc[final_step].idxmax())
        per_lang = c[c.step == final_step].pivot(index="src_lang", columns="layer", values="score").idxmax(axis=1)
        below = int((per_lang < last).sum())
        for lang, flag in declines.items():
            out.add("layers", task, "last_layer_declines", flag, last, src=lang, tgt=lang)
        for lang, layer in per_lang.items():
            out.add("layers", task, "best_layer_final", layer, src=lang, tgt=lang)
        for quantity, v in (("n_languages", len(sig)), ("n_last_layer_declines", int(declines.sum())),
                            ("share_last_layer_declines", declines.mean() if len(sig) else np.nan),
                            ("best_layer_first", best_first), ("best_layer_final", best_final),
                            ("n_best_layer_below_last_final", below)):
            out.add("layers", task, quantity, v, last)
        out.say("layers", task, f"{task}: the last layer ({last}) degrades significantly while a lower layer does "
                f"not in {_share(int(declines.sum()), len(sig))} languages; averaged over languages the best layer "
                f"is {best_first} at the first checkpoint (step {first_step}) and {best_final} at the final one "
                f"(step {final_step}), where it is below the last layer in {_share(below, len(per_lang))} "
                "languages.", last)


def findings_table(probes: pd.DataFrame, emergence: pd.DataFrame, tasks: Mapping[str, Task],
                   alpha: float = 0.05) -> pd.DataFrame:
    """Every finding's numbers and sentences (see the module's docstring); `tasks`, the run's by name, give each
    metric's direction and which tasks have no in-language curves; pairs of tasks in their order."""
    out = _Rows()
    if not emergence.empty and "emerged" in emergence:
        pairwise = pairwise_tasks(tasks)
        curves = _curves(probes, tasks)
        _acquisition(emergence, out, list(tasks), pairwise)
        _transfer(emergence, out, pairwise)
        _degradation(emergence, out, alpha, pairwise)
        _best(emergence, curves, out, pairwise)
        _layers(emergence, curves, out, pairwise)
    df = pd.DataFrame(out.rows, columns=COLUMNS)
    return df.astype({"layer": int, "value": float})
