"""Finding (b), across scripts: does cross-lingual transfer between languages written in different scripts emerge
later than transfer between languages that share one (the paper: en → zh, ar, hi later than between related
languages)?

Per (task, layer), over the source → target pairs whose curves emerged (BH over the layer's cross-lingual pairs, as
(b) counts them; a pair that did not emerge is censored, counted but not timed): the mean emergence step of the
cross-script pairs minus that of the same-script pairs, with a bootstrap interval (each emerged curve's step
recomputed on every replicate of its test items, as its own interval is) and a one-sided permutation p-value.
The permutation shuffles the scripts among the languages, not the pairs: pairs that share a language are not
independent, and a language that is slow in every pair (its test set is hard) is slow under every shuffle, so
only the script, not the language, can make the difference. The p-values of a task's layers are corrected
together (Benjamini-Hochberg)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from xlp.analysis.findings_best import emerged_in
from xlp.analysis.stats import bh_q, replicate_reach, stable_rng
from xlp.data.scripts import script_of

PERMUTATIONS = 1999


def _gaps(steps: np.ndarray, same: np.ndarray) -> np.ndarray:
    """Per row of `same` (arrangements x pairs): the cross-script pairs' mean step minus the same-script pairs'
    (NaN where a side has none)."""
    n_same = same.sum(axis=-1)
    n_cross = same.shape[-1] - n_same
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((n_same > 0) & (n_cross > 0), (~same @ steps) / n_cross - (same @ steps) / n_same, np.nan)


def script_gap_test(src: np.ndarray, tgt: np.ndarray, steps: np.ndarray, scripts: dict[str, str],
                    rng: np.random.Generator, n_perm: int = PERMUTATIONS) -> tuple[float, float]:
    """(gap, p) over emerged pairs (src[i] → tgt[i] emerged at steps[i]): the cross- minus same-script mean step, and
    the share of script shuffles among the languages with a gap at least as large (one-sided: later across
    scripts; the observed arrangement counted among them)."""
    langs = sorted(set(src) | set(tgt))
    index = {lang: i for i, lang in enumerate(langs)}
    s, t = np.array([index[x] for x in src], dtype=int), np.array([index[x] for x in tgt], dtype=int)
    labels = np.array([scripts[lang] for lang in langs])
    steps = np.asarray(steps, dtype=float)
    gap = float(_gaps(steps, (labels[s] == labels[t])[None])[0])
    if np.isnan(gap):
        return gap, np.nan
    shuffled = labels[np.argsort(rng.random((n_perm, len(labels))), axis=1)]  # (n_perm, languages)
    null = _gaps(steps, shuffled[:, s] == shuffled[:, t])
    null = null[~np.isnan(null)]
    return gap, float((1 + (null >= gap - 1e-9).sum()) / (1 + len(null)))


def _boot_steps(boots: dict, keys: list[tuple], steps: np.ndarray, theta: float, reference: str) -> np.ndarray | None:
    """(n_boot, pairs): each curve's emergence step recomputed on every bootstrap replicate of its test items (None
    where a curve has no replicates at every checkpoint). A parallel reduce keeps a cross-lingual curve's replicate
    steps (`reach`) rather than its replicates."""
    cols = []
    for key in keys:
        b = boots.get(key)
        if b is None or (b["n_steps"] if "reach" in b else b["whole"].shape[1]) != len(steps):
            return None
        cols.append(steps[b["reach"] if "reach" in b else replicate_reach(b["whole"], theta, reference)])
    return np.stack(cols, axis=1) if cols else None


def script_timing(em: pd.DataFrame, probes: pd.DataFrame, boots: dict, out, pairwise: set[str], alpha: float,
                  theta: float = 0.95, reference: str = "best", seed: int = 0) -> None:
    transfer = set(em.task[em.src_lang == em.tgt_lang]) - pairwise  # probes fit on a source, scored on a target
    cross = em[(em.src_lang != em.tgt_lang) & em.task.isin(transfer)]
    for task, tg in cross.groupby("task", sort=False):
        steps_of_task = np.sort(probes.loc[probes.task == task, "step"].unique())
        known = tg[tg.src_lang.map(script_of).notna() & tg.tgt_lang.map(script_of).notna()]
        unknown = sorted((set(tg.src_lang) | set(tg.tgt_lang)) - set(known.src_lang) - set(known.tgt_lang))
        rows = []
        for layer, g in known.groupby("layer", sort=True):
            step = emerged_in(g, alpha).to_numpy()  # BH over the layer's pairs with a known script, as (b) does
            same = (g.src_lang.map(script_of) == g.tgt_lang.map(script_of)).to_numpy()
            ok = ~np.isnan(step)
            src, tgt = g.src_lang.to_numpy()[ok], g.tgt_lang.to_numpy()[ok]
            scripts = {lang: script_of(lang) for lang in set(g.src_lang) | set(g.tgt_lang)}
            gap, p = script_gap_test(src, tgt, step[ok], scripts, stable_rng(seed, "script", task, layer))
            lo = hi = np.nan
            if not np.isnan(gap):
                reps = _boot_steps(boots, [(task, layer, s, t) for s, t in zip(src, tgt)], steps_of_task, theta,
                                   reference)
                if reps is not None:
                    sm = same[ok]
                    d = reps[:, ~sm].mean(axis=1) - reps[:, sm].mean(axis=1)
                    lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2])
            rows.append((layer, int((~same).sum()), int((ok & ~same).sum()), int(same.sum()), int((ok & same).sum()),
                         np.median(step[ok & ~same]) if (ok & ~same).any() else np.nan,
                         np.median(step[ok & same]) if (ok & same).any() else np.nan, gap, lo, hi, p))
        if not rows:
            continue
        ps = np.array([r[-1] for r in rows], dtype=float)
        qs = np.full(len(ps), np.nan)
        tested = ~np.isnan(ps)
        qs[tested] = bh_q(ps[tested])
        parts = []
        for r, q in zip(rows, qs):
            layer, n_x, e_x, n_s, e_s, med_x, med_s, gap, lo, hi, p = r
            for quantity, v in (("n_cross_script", n_x), ("n_cross_script_emerged", e_x), ("n_same_script", n_s),
                                ("n_same_script_emerged", e_s), ("median_step_cross_script", med_x),
                                ("median_step_same_script", med_s), ("script_gap", gap), ("script_gap_lo", lo),
                                ("script_gap_hi", hi), ("script_gap_p", p), ("script_gap_q", q)):
                out.add("transfer", task, quantity, v, layer, scope="scripts")
            text = (f"layer {layer}: cross-script {e_x} of {n_x} pairs emerged, same-script {e_s} of {n_s}")
            if np.isnan(gap):
                text += " (no timing to compare: a side has no emerged pair)"
            else:
                later = "later" if q < alpha else "not significantly later" if gap > 0 else "not later"
                interval = (f"{100 * (1 - alpha):g} % interval {lo:+.0f} to {hi:+.0f}" if not np.isnan(lo) else
                            "no interval: a curve lacks bootstrap replicates at some checkpoint")
                text += (f"; cross-script {later} (median step {med_x:g} vs {med_s:g}, mean gap {gap:+.0f} steps, "
                         f"{interval}, permutation p = {p:.2g}, BH q = {q:.2g})")
            parts.append(text)
        note = f"; left out, no script known: {', '.join(unknown)}" if unknown else ""
        out.say("transfer", task, f"{task} transfer across scripts vs within a script (emerged pairs timed, the "
                "others censored; scripts shuffled among languages, BH over layers): " + "; ".join(parts) + note + ".")

