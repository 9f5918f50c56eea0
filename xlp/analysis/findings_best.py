"""Findings (d), no single best checkpoint, and (e), the last layer's decline: both tested on held-out items.

(d) Each language's best checkpoint, and the one best on average over languages, are chosen on one half of the
test units and the regret (the language's best minus its value at the common checkpoint) measured on the other,
both ways, averaged (as degradation is); its bootstrap redoes both choices in every replicate, and BH over the
languages of the (task, layer) says in how many the own best is significantly better than the common one.
(e) Per language, the last layer's cross-fitted degradation minus a lower layer's, by a paired bootstrap (the
same resamples of the language's test units for every layer), over the lower layers that emerged; a language's
p-value is Bonferroni's over its lower layers, then BH over the task's languages."""

from __future__ import annotations

import numpy as np
import pandas as pd

from xlp.analysis.curves import degradation_boot
from xlp.analysis.stats import bh_q, boot_p


def _share(k: int, n: int) -> str:
    return f"{k} of {n}" + (f" ({100 * k / n:.0f} %)" if n else "")


def _ins(em: pd.DataFrame, pairwise: set[str]) -> pd.DataFrame:
    return em[(em.src_lang == em.tgt_lang) & ~em.task.isin(pairwise)]


def emerged_in(g: pd.DataFrame, alpha: float) -> pd.Series:
    """Emergence step per curve of a subset (NaN: did not emerge), with BH over the subset's own p-values (its
    family) rather than over all of the task's curves."""
    q = bh_q(g["emergence_p"].to_numpy(dtype=float))
    ok = (q < alpha) & ~g["at_first"].astype(bool).to_numpy()
    return pd.Series(np.where(ok, g["candidate_step"].astype(float), np.nan), index=g.index)


def regret_test(boots: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Per language (its curve's halves and replicates, same checkpoints): the cross-fitted regret under the
    checkpoint best on average, and its one-sided bootstrap p-value (the own best no better)."""
    PA, PB = (np.stack([b["point"][h] for b in boots]) for h in (0, 1))  # (L, T)
    BA, BB = (np.stack([b["boot"][h] for b in boots]) for h in (0, 1))  # (L, n_boot, T)
    L, R, _ = BA.shape

    def regret(on, chosen_on):  # best and common best chosen on `chosen_on`, measured on `on`
        own = np.argmax(chosen_on, axis=-1)
        common = np.argmax(chosen_on.mean(axis=0), axis=-1)
        if on.ndim == 2:
            return on[np.arange(L), own] - on[:, common]
        r = np.arange(R)
        return on[np.arange(L)[:, None], r, own] - on[:, r, common]

    point = (regret(PB, PA) + regret(PA, PB)) / 2
    reps = (regret(BB, BA) + regret(BA, BB)) / 2  # (L, n_boot)
    return point, np.array([boot_p(x) for x in reps])


def best_checkpoints(em: pd.DataFrame, curves: pd.DataFrame, boots: dict, out, pairwise: set[str],
                     alpha: float) -> None:
    ins = _ins(em, pairwise)
    for (task, layer), g in curves.groupby(["task", "layer"], sort=False):
        wide = g.pivot(index="src_lang", columns="step", values="score").dropna(axis=1)
        if wide.empty:
            continue
        e = ins[(ins.task == task) & (ins.layer == layer)].set_index("src_lang").loc[wide.index]
        n = len(wide)
        best = wide.idxmax(axis=1)  # on all items, descriptive; steps ascend: the earliest on ties
        at_final = int((best == wide.columns[-1]).sum())
        tested = e[e.degradation_p.notna()]  # BH over these in-language curves (the finding's family)
        q_deg = bh_q(tested.degradation_p.to_numpy(dtype=float))
        holds = int(((q_deg >= alpha) | (tested.degradation.to_numpy(dtype=float) <= 0)).sum())
        b = [boots.get((task, layer, lang, lang)) for lang in wide.index]
        held = all(x is not None and len(x["point"][0]) == wide.shape[1] for x in b) and n > 1
        avg = wide.mean(axis=0).idxmax()
        if held:
            regret, p = regret_test(b)
        else:  # no per-item scores: the point regret on all items (favours the languages' bests), no test
            regret, p = (wide.max(axis=1) - wide[avg]).to_numpy(), np.full(n, np.nan)
        q = bh_q(p)
        differ = int((q < alpha).sum())
        for lang, r, pl, ql in zip(wide.index, regret, p, q):
            out.add("best", task, "regret", r, layer, src=lang, tgt=lang)
            out.add("best", task, "regret_p", pl, layer, src=lang, tgt=lang)
            out.add("best", task, "regret_q", ql, layer, src=lang, tgt=lang)
            out.add("best", task, "best_step", best[lang], layer, src=lang, tgt=lang)
        for quantity, v in (("n_languages", n), ("n_distinct_best", best.nunique()),
                            ("n_best_differs_significantly", differ if held else np.nan),
                            ("share_best_is_final", at_final / n), ("n_tested", len(tested)),
                            ("share_final_not_significantly_worse", holds / len(tested) if len(tested) else np.nan),
                            ("avg_best_step", avg), ("median_regret", np.median(regret)),
                            ("max_regret", np.max(regret))):
            out.add("best", task, quantity, v, layer)
        if layer == curves.loc[curves.task == task, "layer"].max():
            text = (f"{task} (layer {layer}): the {n} languages have {best.nunique()} distinct best checkpoints "
                    f"(on all test items); the best is the final checkpoint in {_share(at_final, n)}")
            if len(tested):
                text += (f", and the final is not significantly worse than the best (cross-fitted degradation, BH "
                         f"over these {len(tested)} curves) in {_share(holds, len(tested))}")
            if held:
                text += (f"; under the one checkpoint best on average (step {avg} on all items; chosen on one half of "
                         f"the test items, regret measured on the other) the median regret is "
                         f"{np.median(regret) + 0.0:.3g} (largest {np.max(regret) + 0.0:.3g}, "
                         f"{wide.index[int(np.argmax(regret))]}), and the own best is significantly better in "
                         f"{_share(differ, n)} languages (bootstrap, BH over the {n} languages).")
            else:
                text += (f"; under the one checkpoint best on average (step {avg}) the median regret is "
                         f"{np.median(regret) + 0.0:.3g} (largest {np.max(regret) + 0.0:.3g}), on all items: "
                         "no per-item scores (or one language), so no held-out regret and no test.")
            out.say("best", task, text, layer)


def layer_decline(em: pd.DataFrame, curves: pd.DataFrame, boots: dict, out, pairwise: set[str],
                  alpha: float) -> None:
    ins = _ins(em, pairwise)
    for task, g in ins.groupby("task", sort=False):
        last = int(g.layer.max())
        if g.layer.nunique() < 2:
            continue
        emerged = {layer: pd.Series(emerged_in(h, alpha).notna().to_numpy(), index=h.src_lang)
                   for layer, h in g.groupby("layer")}  # BH over each layer's in-language curves
        langs, ps, diffs = [], [], []
        for lang in sorted(g.src_lang.unique()):
            top = boots.get((task, last, lang, lang))
            lower = [lay for lay in sorted(emerged) if lay < last and emerged[lay].get(lang, False)]
            lower = [lay for lay in lower if boots.get((task, lay, lang, lang)) is not None]
            if top is None or not lower:
                continue
            d_top, r_top = degradation_boot(top)
            p, diff = 1.0, np.nan
            for lay in lower:  # shared resamples: the same draw of the language's units at every layer
                d, r = degradation_boot(boots[(task, lay, lang, lang)])
                if len(r) == len(r_top) and boot_p(r_top - r) < p:
                    p, diff = boot_p(r_top - r), d_top - d
            langs.append(lang)
            ps.append(min(1.0, p * len(lower)))  # Bonferroni over the language's lower layers
            diffs.append(diff)
        q = bh_q(np.array(ps, dtype=float)) if ps else np.array([])
        declines = q < alpha
        for lang, flag, p, d in zip(langs, declines, ps, diffs):
            out.add("layers", task, "last_layer_declines", flag, last, src=lang, tgt=lang)
            out.add("layers", task, "last_minus_lower_p", p, last, src=lang, tgt=lang)
            out.add("layers", task, "last_minus_lower_degradation", d, last, src=lang, tgt=lang)
        c = curves[curves.task == task]
        mean = c.groupby(["step", "layer"])["score"].mean().unstack("layer")
        first_step, final_step = mean.index[0], mean.index[-1]
        best_first, best_final = int(mean.loc[first_step].idxmax()), int(mean.loc[final_step].idxmax())
        per_lang = c[c.step == final_step].pivot(index="src_lang", columns="layer", values="score").idxmax(axis=1)
        below = int((per_lang < last).sum())
        for lang, layer in per_lang.items():
            out.add("layers", task, "best_layer_final", layer, src=lang, tgt=lang)
        k = int(declines.sum())
        for quantity, v in (("n_languages", len(langs)), ("n_last_layer_declines", k),
                            ("share_last_layer_declines", k / len(langs) if langs else np.nan),
                            ("best_layer_first", best_first), ("best_layer_final", best_final),
                            ("n_best_layer_below_last_final", below)):
            out.add("layers", task, quantity, v, last)
        out.say("layers", task, f"{task}: the last layer ({last}) degrades significantly more than a lower layer that "
                f"emerged in {_share(k, len(langs))} languages with such a layer (paired bootstrap of the difference "
                "of cross-fitted degradations, Bonferroni over a language's lower layers, BH over its languages); "
                f"averaged over languages the best layer is {best_first} at the first checkpoint (step {first_step}) "
                f"and {best_final} at the final one (step {final_step}), where it is below the last layer in "
                f"{_share(below, len(per_lang))} languages.", last)
