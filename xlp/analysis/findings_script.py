"""Finding (b), across scripts: does cross-lingual transfer between languages written in different scripts emerge
later than transfer between languages that share one (the paper: en → zh, ar, hi later than between related
languages)?

Per (task, layer), over every source → target pair with a known script: a pair emerged at its emergence step (BH over
the layer's cross-lingual pairs, as (b) counts them), or did not emerge by the last checkpoint, which every curve
shares, so it is censored there and ranks after every pair that emerged (a test over the emerged pairs alone would
choose on the outcome: cross-script pairs that rarely emerge would look early). The statistic is the share of
(cross-script, same-script) couples of pairs in which the cross-script one emerged later, ties (both never emerging,
say) counted half: Mann-Whitney's probability, 0.5 when the script does not matter. Its interval resamples the
languages (every pair of a drawn language pair, as often as its languages are drawn), and its one-sided p-value
permutes the scripts among the languages, not the pairs: pairs that share a language are not independent, and a
language that is slow in every pair (its test set is hard) is slow under every shuffle, so only the script, not the
language, can make the difference. The p-values of a task's layers are corrected together (Benjamini-Hochberg)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from xlp.analysis.findings_best import emerged_in
from xlp.analysis.stats import bh_q, stable_rng
from xlp.data.scripts import script_of

PERMUTATIONS = 1999


def _ranks(t: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties averaged (pairs that never emerged, at +inf, share the top one)."""
    _, inverse, counts = np.unique(t, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2)[inverse]


def _later_share(t: np.ndarray, same: np.ndarray) -> np.ndarray:
    """Per row of `same` (arrangements x pairs): the share of (cross-script, same-script) couples in which the
    cross-script pair emerged later, ties half (Mann-Whitney's U over both counts); NaN where a side has none.
    `t`: each pair's emergence step, +inf where it did not emerge."""
    n_same = same.sum(axis=-1)
    n_cross = same.shape[-1] - n_same
    u = (~same) @ _ranks(t) - n_cross * (n_cross + 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((n_same > 0) & (n_cross > 0), u / (n_cross * n_same), np.nan)


def script_later_test(src: np.ndarray, tgt: np.ndarray, steps: np.ndarray, scripts: dict[str, str],
                      rng: np.random.Generator, n_perm: int = PERMUTATIONS) -> tuple[float, float]:
    """(share, p) over pairs src[i] → tgt[i] that emerged at steps[i] (+inf: not by the last checkpoint): the share
    of cross/same-script couples in which the cross-script pair emerged later, and the share of script shuffles
    among the languages with a share at least as large (one-sided: later across scripts; the observed arrangement
    counted among them)."""
    s, t, labels = _indexed(src, tgt, scripts)
    steps = np.asarray(steps, dtype=float)
    share = float(_later_share(steps, (labels[s] == labels[t])[None])[0])
    if np.isnan(share):
        return share, np.nan
    shuffled = labels[np.argsort(rng.random((n_perm, len(labels))), axis=1)]  # (n_perm, languages)
    null = _later_share(steps, shuffled[:, s] == shuffled[:, t])
    null = null[~np.isnan(null)]
    return share, float((1 + (null >= share - 1e-9).sum()) / (1 + len(null)))


def later_share_interval(src: np.ndarray, tgt: np.ndarray, steps: np.ndarray, scripts: dict[str, str],
                         rng: np.random.Generator, alpha: float, n_boot: int = 999) -> tuple[float, float]:
    """The share's percentile interval over resampled languages: each draw weighs a pair by how often its source
    and its target were drawn (a cluster bootstrap: the language is the unit the pairs share)."""
    s, t, labels = _indexed(src, tgt, scripts)
    steps = np.asarray(steps, dtype=float)
    same = labels[s] == labels[t]
    if same.all() or not same.any():
        return np.nan, np.nan
    tx, ts = steps[~same][:, None], steps[same][None, :]
    couples = (tx > ts) + 0.5 * (tx == ts)  # (cross pairs, same pairs)
    drawn = rng.multinomial(len(labels), np.full(len(labels), 1 / len(labels)), size=n_boot).astype(float)
    weight = drawn[:, s] * drawn[:, t]  # (n_boot, pairs)
    wx, ws = weight[:, ~same], weight[:, same]
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.einsum("bi,ij,bj->b", wx, couples, ws) / (wx.sum(1) * ws.sum(1))
    share = share[np.isfinite(share)]
    return tuple(np.quantile(share, [alpha / 2, 1 - alpha / 2])) if len(share) else (np.nan, np.nan)


def _indexed(src: np.ndarray, tgt: np.ndarray, scripts: dict[str, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source and target as indices into the sorted languages, and each language's script."""
    langs = sorted(set(src) | set(tgt))
    index = {lang: i for i, lang in enumerate(langs)}
    return (np.array([index[x] for x in src], dtype=int), np.array([index[x] for x in tgt], dtype=int),
            np.array([scripts[lang] for lang in langs]))


def script_timing(em: pd.DataFrame, probes: pd.DataFrame, out, pairwise: set[str], alpha: float, seed: int = 0) -> None:
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
            t = np.where(ok, step, np.inf)  # not emerged: censored at the last checkpoint, after every emerged pair
            src, tgt = g.src_lang.to_numpy(), g.tgt_lang.to_numpy()
            scripts = {lang: script_of(lang) for lang in set(src) | set(tgt)}
            rng = stable_rng(seed, "script", task, layer)
            share, p = script_later_test(src, tgt, t, scripts, rng)
            lo, hi = later_share_interval(src, tgt, t, scripts, rng, alpha)
            rows.append((layer, int((~same).sum()), int((ok & ~same).sum()), int(same.sum()), int((ok & same).sum()),
                         float(np.median(t[~same])) if (~same).any() else np.nan,
                         float(np.median(t[same])) if same.any() else np.nan, share, lo, hi, p))
        if not rows:
            continue
        ps = np.array([r[-1] for r in rows], dtype=float)
        qs = np.full(len(ps), np.nan)
        tested = ~np.isnan(ps)
        qs[tested] = bh_q(ps[tested])
        parts = []
        last = float(steps_of_task[-1]) if len(steps_of_task) else np.nan
        for r, q in zip(rows, qs):
            layer, n_x, e_x, n_s, e_s, med_x, med_s, share, lo, hi, p = r
            for quantity, v in (("n_cross_script", n_x), ("n_cross_script_emerged", e_x), ("n_same_script", n_s),
                                ("n_same_script_emerged", e_s), ("median_step_cross_script", _finite(med_x)),
                                ("median_step_same_script", _finite(med_s)), ("script_later_share", share),
                                ("script_later_share_lo", lo), ("script_later_share_hi", hi), ("script_later_p", p),
                                ("script_later_q", q)):
                out.add("transfer", task, quantity, v, layer, scope="scripts")
            text = f"layer {layer}: cross-script {e_x} of {n_x} pairs emerged, same-script {e_s} of {n_s}"
            if np.isnan(share):
                text += " (nothing to compare: a side has no pair)"
            else:
                later = ("later" if q < alpha and share > 0.5 else "not significantly later" if share > 0.5
                         else "not later")
                text += (f"; cross-script {later}: in {share:.0%} of (cross-script, same-script) couples the "
                         f"cross-script pair emerged later (ties half; {100 * (1 - alpha):g} % interval {lo:.0%} to "
                         f"{hi:.0%}, languages resampled; permutation p = {p:.2g}, BH q = {q:.2g}); median step "
                         f"{_median_text(med_x, last)} vs {_median_text(med_s, last)}")
            parts.append(text)
        note = f"; left out, no script known: {', '.join(unknown)}" if unknown else ""
        out.say("transfer", task, f"{task} transfer across scripts vs within a script (a pair that did not "
                "emerge is censored at the last checkpoint; scripts shuffled among languages, BH over layers): "
                + "; ".join(parts) + note + ".")


def _finite(step: float) -> float:
    return step if np.isfinite(step) else np.nan  # a median past the last checkpoint: not a step


def _median_text(step: float, last: float) -> str:
    return f"{step:g}" if np.isfinite(step) else f"after the last checkpoint ({last:g})"
