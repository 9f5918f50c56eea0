"""Emergence that can say no, cross-fitted degradation, and the findings checked against plain recomputations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest, false_discovery_control

from xlp.analysis.curve_table import analyse_curves, curve_analysis, emergence_table
from xlp.analysis.findings import findings_table
from xlp.analysis.stats import stable_rng
from xlp.config import AnalysisSpec
from xlp.tasks import BUILT_IN


def _tasks(*names: str) -> dict:
    return {name: BUILT_IN[name] for name in names}


STEPS = (0, 25, 50, 100, 200, 400, 800)
LANGS = ("en", "de", "fr", "vi")


def _rows(p_by_step, rng, n=600, tgt="de", seeds=(0,), seeds_differ=False, baseline=0.2, task="pos", layer=1,
          src="en") -> list[dict]:
    rows = []
    for step, p in zip(STEPS, p_by_step):
        c = rng.random(n) < p
        for seed in seeds:
            hit = rng.random(n) < p if seeds_differ else c
            rows.append({"checkpoint": f"step_{step}", "step": step, "task": task, "layer": layer, "src_lang": src,
                         "tgt_lang": tgt, "seed": seed, "metric": "accuracy", "value": hit.mean(), "baseline": baseline,
                         "n_train": 100, "n_test": n, "seed_invariant": not seeds_differ,
                         "correct": np.packbits(hit).tobytes()})
    return rows


def test_emergence_says_yes_and_no():
    rng = np.random.default_rng(0)
    rising = [0.30, 0.45, 0.62, 0.75, 0.83, 0.86, 0.86]
    rows = (_rows(rising, rng, tgt="de") + _rows([0.6] * 7, rng, tgt="fr")  # flat: only item noise
            + _rows([0.6, 0.8, 0.5, 0.75, 0.55, 0.7, 0.6], rng, tgt="vi")  # differing checkpoints, no trend
            + _rows([0.02, 0.05, 0.08, 0.11, 0.14, 0.16, 0.17], rng, tgt="zh")  # rises, but stays below baseline
            + _rows(rising, rng, tgt="ar", seeds=(0, 1, 2), seeds_differ=True))
    em = emergence_table(pd.DataFrame(rows), BUILT_IN).set_index("tgt_lang")
    for lang in ("de", "ar"):
        e = em.loc[lang]
        assert e.emerged and e.trend_p < 0.05 and e.rise_p < 0.05 and e.above_baseline_p < 0.05
        # 0.95 x 0.86 = 0.817: first reached at 200 by the curve's generating probabilities
        assert e.emergence_step_lo <= e.emergence_step <= e.emergence_step_hi and e.emergence_step in (100, 200, 400)
        assert e.emergence_step_normalized_lo <= e.emergence_step_normalized <= e.emergence_step_normalized_hi
    assert not em.loc["fr"].emerged and np.isnan(em.loc["fr"].emergence_step)
    vi = em.loc["vi"]
    assert vi.rise_p < 0.05 and vi.trend_p >= 0.05 and not vi.emerged  # one lucky checkpoint is not a trend
    zh = em.loc["zh"]
    assert zh.trend_p < 0.05 and zh.above_baseline_p > 0.05 and not zh.emerged
    assert np.isnan(em.loc[["fr", "vi", "zh"], "emergence_step_lo"]).all()


def test_reference_final_and_a_curve_that_learns_then_forgets():
    rng = np.random.default_rng(1)
    rows = _rows([0.30, 0.55, 0.85, 0.80, 0.70, 0.55, 0.35], rng)
    best = emergence_table(pd.DataFrame(rows), BUILT_IN).iloc[0]
    final = emergence_table(pd.DataFrame(rows), BUILT_IN, emergence_reference="final").iloc[0]
    assert best.emerged and best.emergence_step == 50 and best.reference_step == 50
    assert best.degradation_significant and 0.4 < best.degradation < 0.6
    assert not final.emerged and final.reference_step == 800  # back near where it started: no rise to the final


def test_degradation_is_cross_fitted_and_corrected():
    """Twenty flat curves (only item noise) and one that really drops at the end: picking the best on the same
    items would call many flat ones degraded; cross-fitted and BH-corrected, only the real one is."""
    rng = np.random.default_rng(2)
    rows = []
    for i in range(20):
        rows += _rows([0.7] * 7, rng, n=300, src=f"s{i:02d}")
    rows += _rows([0.3, 0.5, 0.7, 0.8, 0.8, 0.8, 0.6], rng, n=300, src="zz")
    em = analyse_curves(pd.DataFrame(rows), AnalysisSpec(), BUILT_IN).set_index("src_lang")
    assert em.degradation_significant.tolist() == [False] * 20 + [True]
    flat = em.iloc[:20]  # the naive point estimate: the flat ones "lose" wherever the final is not the best ...
    assert ((flat.final_minus_best < 0) == (flat.best_step != flat.final_step)).all()
    assert np.allclose(flat.final_minus_best, flat.final_value - flat.best_value)
    # ... and on average by more than the cross-fitted estimate, which is about 0 where nothing changes
    assert -flat.final_minus_best.mean() > flat.degradation.mean() + 2 * flat.degradation.std() / np.sqrt(20)
    assert abs(flat.degradation.mean()) < 2 * flat.degradation.std() / np.sqrt(20) + 1e-3


def learning_probes(n=300, seed=0, tasks=("pos", "deprel")) -> pd.DataFrame:
    """pos rises early, deprel later; cross-lingual later than in-language; layer 2 drops at the final checkpoint."""
    rng = np.random.default_rng(seed)
    rows = []
    for ti, task in enumerate(tasks):
        for layer in (0, 1, 2):
            for src in LANGS:
                for tgt in LANGS:
                    lag = ti * 2 + (0 if src == tgt else 1) + LANGS.index(tgt) % 2
                    p = [0.3 + 0.55 * min(1, max(0, (i - 0.5 * lag) / 2.5)) for i in range(len(STEPS))]
                    if layer == 2:
                        p[-1] -= 0.2
                    rows += _rows(p, rng, n=n, tgt=tgt, task=task, layer=layer, src=src)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def learned():
    probes = learning_probes()
    ca = curve_analysis(probes, AnalysisSpec(), BUILT_IN)
    return probes, ca.table, findings_table(probes, ca, _tasks("pos", "deprel"))


def _get(f, finding, quantity, task="pos", layer=2, **kw) -> float:
    sel = f[(f.finding == finding) & (f.quantity == quantity) & (f.task == task) & (f.layer == layer)]
    for k, v in kw.items():
        sel = sel[sel[k] == v]
    [value] = sel.value.tolist()
    return value


def test_findings_match_an_independent_computation(learned):
    probes, em, f = learned

    def family(task, layer, in_lang, p="emergence_p"):  # BH within the subset a finding counts
        g = em[(em.task == task) & (em.layer == layer) & ((em.src_lang == em.tgt_lang) == in_lang)]
        return g, false_discovery_control(g[p].to_numpy())

    step, sig = {}, {}
    for task in ("pos", "deprel"):
        for layer in (0, 1, 2):
            for in_lang in (True, False):
                g, q = family(task, layer, in_lang)
                for r, qi in zip(g.itertuples(), q):
                    ok = qi < 0.05 and not r.at_first
                    step[(task, layer, r.src_lang, r.tgt_lang)] = r.candidate_step if ok else np.nan
                g, q = family(task, layer, in_lang, "degradation_p")
                for r, qi in zip(g.itertuples(), q):
                    sig[(task, layer, r.src_lang, r.tgt_lang)] = bool(qi < 0.05 and r.degradation > 0)
    assert all(step[("pos", layer, x, x)] > 0 for layer in (0, 1, 2) for x in LANGS)  # POS emerges everywhere
    for task in ("pos", "deprel"):
        for layer in (0, 1, 2):
            # (a) acquisition
            s = [step[(task, layer, x, x)] for x in LANGS if not np.isnan(step[(task, layer, x, x)])]
            assert _get(f, "acquisition", "n_emerged", task, layer, other_task="") == len(s)
            assert np.array_equal(_get(f, "acquisition", "median_step", task, layer, other_task=""), np.median(s),
                                  equal_nan=True)
            # (b) transfer: each pair against both in-language steps, where all three emerged (else censored)
            pairs = [(a, b) for a in LANGS for b in LANGS if a != b]
            known = [x for x in pairs if not np.isnan([step[(task, layer, *x)], step[(task, layer, x[0], x[0])],
                                                       step[(task, layer, x[1], x[1])]]).any()]
            after = [x for x in known if step[(task, layer, *x)] > max(step[(task, layer, x[0], x[0])],
                                                                       step[(task, layer, x[1], x[1])])]
            assert _get(f, "transfer", "n_after_both", task, layer) == len(after)
            assert _get(f, "transfer", "n_comparable", task, layer) == len(known)
            assert np.array_equal(_get(f, "transfer", "share_after_both", task, layer),
                                  len(after) / len(known) if known else np.nan, equal_nan=True)
            for a, b in pairs:
                assert _get(f, "transfer", "after_both", task, layer, src_lang=a, tgt_lang=b) == ((a, b) in after)
            # (c) degradation, in-language
            n_sig = sum(sig[(task, layer, x, x)] for x in LANGS)
            assert _get(f, "degradation", "n_significant", task, layer, scope="in-language") == n_sig
            # (d) best checkpoint, from probes.parquet's values
            ins = probes[(probes.task == task) & (probes.layer == layer) & (probes.src_lang == probes.tgt_lang)]
            curve = {x: ins[ins.src_lang == x].groupby("step").value.mean() for x in LANGS}
            mean = sum(curve.values()) / len(LANGS)
            avg = mean.index[int(np.argmax(mean.to_numpy()))]
            bests = {x: c.index[int(np.argmax(c.to_numpy()))] for x, c in curve.items()}
            assert _get(f, "best", "avg_best_step", task, layer) == avg
            assert _get(f, "best", "n_distinct_best", task, layer) == len(set(bests.values()))
            assert _get(f, "best", "share_best_is_final", task, layer) == np.mean([b == 800 for b in bests.values()])
            # regret held out: each language's best and the best on average chosen on one half of the items (the
            # reducer's split), measured on the other, both ways, averaged
            halves = {}
            for x in LANGS:
                bits = np.stack([np.unpackbits(np.frombuffer(b, np.uint8), count=300)
                                 for b in ins[ins.src_lang == x].sort_values("step").correct])
                perm = stable_rng(0, task, x, 300).permutation(300)
                halves[x] = [bits[:, np.sort(perm[:150])].mean(axis=1), bits[:, np.sort(perm[150:])].mean(axis=1)]
            for h in (0, 1):
                common = int(np.argmax(np.mean([halves[x][h] for x in LANGS], axis=0)))
                for x in LANGS:
                    halves[x].append(halves[x][1 - h][int(np.argmax(halves[x][h]))] - halves[x][1 - h][common])
            for x in LANGS:
                assert np.isclose(_get(f, "best", "regret", task, layer, src_lang=x), (halves[x][2] + halves[x][3]) / 2)
        # (e) layers: layer 2 drops at the final checkpoint, layers 0 and 1 do not: the difference is significant
        assert _get(f, "layers", "n_last_layer_declines", task) == len(LANGS)
    # (a) order of the two tasks where both emerged, with an independent sign test, BH over the three layers
    ps = []
    for layer in (0, 1, 2):
        both = [x for x in LANGS if not np.isnan([step[("pos", layer, x, x)], step[("deprel", layer, x, x)]]).any()]
        first = sum(step[("pos", layer, x, x)] < step[("deprel", layer, x, x)] for x in both)
        later = sum(step[("pos", layer, x, x)] > step[("deprel", layer, x, x)] for x in both)
        assert (_get(f, "acquisition", "first_before", layer=layer, other_task="deprel"),
                _get(f, "acquisition", "first_after", layer=layer, other_task="deprel")) == (first, later)
        ps.append(binomtest(first, first + later).pvalue if first + later else np.nan)
    assert np.allclose([_get(f, "acquisition", "sign_test_p", layer=layer, other_task="deprel") for layer in (0, 1, 2)],
                       ps)
    assert np.allclose([_get(f, "acquisition", "sign_test_q", layer=layer, other_task="deprel") for layer in (0, 1, 2)],
                       false_discovery_control(ps))


def test_every_finding_has_a_sentence_with_its_numbers(learned):
    f = learned[2]
    said = f[f.quantity == "sentence"]
    assert set(said.finding) == {"acquisition", "transfer", "degradation", "best", "layers"}
    text = " ".join(said.text)
    n = int(_get(f, "acquisition", "n_emerged", other_task=""))
    assert f"pos (layer 2) emerged in {n} of 4" in text
    assert "pos emerges before deprel in 4 of the 4 languages where both emerged" in text
    assert f"in {int(_get(f, 'degradation', 'n_significant', scope='in-language'))} of 4" in text


def test_findings_on_a_series_where_nothing_emerges():
    rng = np.random.default_rng(3)
    rows = []
    for task in ("pos", "deprel"):
        for src in LANGS[:2]:
            for tgt in LANGS[:2]:
                rows += _rows([0.5] * 7, rng, n=200, task=task, src=src, tgt=tgt)
    probes = pd.DataFrame(rows)
    ca = curve_analysis(probes, AnalysisSpec(), BUILT_IN)
    em = ca.table
    f = findings_table(probes, ca, _tasks("pos", "deprel"))
    assert not em.emerged.any()
    text = " ".join(f[f.quantity == "sentence"].text)
    assert "pos (layer 1) emerged in 0 of 2 (0 %) languages. Family: BH over the layer's 2 in-language curves." in text
    assert "0 of 2 (0 %) source → target pairs emerged cross-lingually (BH over these 2 pairs)." in text
    assert "pos emerges before deprel in 0 of the 0 languages where both emerged" in text
    assert "neither in 2 of 2" in text
    assert "median step did not emerge vs did not emerge" in text
    assert np.isnan(_get(f, "acquisition", "median_step", layer=1, other_task=""))
    assert findings_table(probes.iloc[:0], curve_analysis(probes.iloc[:0], AnalysisSpec(), {}), {}).empty


def test_the_last_layers_decline_needs_a_lower_layer_that_learned():
    """Layers 0 and 1 never learn (flat), layer 2 learns and then drops: comparing significance flags called this
    "the last layer degrades while a lower one does not" in every language; a lower layer that never emerged holds
    no knowledge that moved down, so no language is counted, and where a lower layer did learn and holds, the
    difference of the two degradations is what is tested."""
    rng = np.random.default_rng(6)
    rows = []
    for src in LANGS:
        for layer in (0, 1, 2):
            p = [0.3] * 7 if layer < 2 else [0.3, 0.5, 0.7, 0.8, 0.8, 0.8, 0.55]
            rows += _rows(p, rng, n=400, tgt=src, src=src, layer=layer)
    probes = pd.DataFrame(rows)
    ca = curve_analysis(probes, AnalysisSpec(), BUILT_IN)
    f = findings_table(probes, ca, _tasks("pos"))
    assert _get(f, "layers", "n_languages") == 0 and _get(f, "layers", "n_last_layer_declines") == 0
    # layer 1 learns as well and keeps it: now the difference is tested, and it is large
    rows = [r for r in rows if r["layer"] != 1]
    for src in LANGS:
        rows += _rows([0.3, 0.5, 0.7, 0.8, 0.8, 0.8, 0.8], rng, n=400, tgt=src, src=src, layer=1)
    probes = pd.DataFrame(rows)
    ca = curve_analysis(probes, AnalysisSpec(), BUILT_IN)
    f = findings_table(probes, ca, _tasks("pos"))
    assert _get(f, "layers", "n_languages") == 4 and _get(f, "layers", "n_last_layer_declines") == 4
    for x in LANGS:
        assert _get(f, "layers", "last_minus_lower_degradation", src_lang=x) > 0.15


def test_no_single_best_counts_languages_whose_own_best_is_significantly_better():
    """en peaks early and loses it, de rises to the end: the checkpoint best on average is the final one, where en
    has lost 0.4 (significant, held out) and de nothing."""
    rng = np.random.default_rng(7)
    rows = (_rows([0.3, 0.9, 0.8, 0.5, 0.5, 0.5, 0.5], rng, n=400, src="en", tgt="en")
            + _rows([0.3, 0.35, 0.4, 0.5, 0.7, 0.85, 0.98], rng, n=400, src="de", tgt="de"))
    probes = pd.DataFrame(rows)
    f = findings_table(probes, curve_analysis(probes, AnalysisSpec(), BUILT_IN), _tasks("pos"))
    assert _get(f, "best", "avg_best_step", layer=1) == 800
    assert _get(f, "best", "n_best_differs_significantly", layer=1) == 1
    assert _get(f, "best", "regret_q", layer=1, src_lang="en") < 0.05 < _get(f, "best", "regret_q", layer=1,
                                                                              src_lang="de")
    assert 0.3 < _get(f, "best", "regret", layer=1, src_lang="en") < 0.5


SCRIPT_LANGS = ("en", "de", "fr", "es", "ru", "el", "ar", "zh")  # four in Latin, four in scripts of their own


def _script_probes(lag, seed: int) -> pd.DataFrame:
    """POS curves of eight languages, in-language and across; a pair rises once past its lag (in checkpoints)."""
    rng = np.random.default_rng(seed)
    rows = []
    for src in SCRIPT_LANGS:
        for tgt in SCRIPT_LANGS:
            p = [0.3 + 0.55 * min(1, max(0, (i - 0.5 * lag(src, tgt)) / 2.5)) for i in range(len(STEPS))]
            rows += _rows(p, rng, n=300, tgt=tgt, src=src)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("later", [True, False])
def test_cross_script_transfer_is_timed_against_same_script_transfer(later):
    """Cross-script pairs that rise 1.5 checkpoints after same-script ones are found later, with an interval above
    one half; when the lag follows the target language (zh, ar, fr, de slow, whatever the source) and not the
    script, the permutation over languages' scripts does not call it the script's doing."""
    from xlp.data.scripts import script_of

    def lag(src: str, tgt: str) -> int:
        return 3 * (script_of(src) != script_of(tgt) if later else tgt in ("zh", "ar", "fr", "de"))

    probes = _script_probes(lag, seed=5)
    f = findings_table(probes, curve_analysis(probes, AnalysisSpec(), BUILT_IN), _tasks("pos"))
    # the parts mapped as the run's parallel reducer maps them (which keeps less of each bootstrap): the same table
    parts = curve_analysis(probes, AnalysisSpec(), BUILT_IN, map_parts=lambda f, xs: [f(x) for x in xs])
    pd.testing.assert_frame_equal(findings_table(probes, parts, _tasks("pos")), f)
    rows = f[f.scope == "scripts"].set_index("quantity").value
    assert rows["n_cross_script"] == 8 * 7 - 4 * 3 and rows["n_same_script"] == 4 * 3
    text = f[(f.finding == "transfer") & f.text.str.contains("across scripts")].text.iloc[0]
    if later:
        assert rows["script_later_share"] > 0.7 and rows["script_later_share_lo"] > 0.5
        assert rows["script_later_q"] < 0.05 and "cross-script later:" in text
    else:  # the slow targets are two Latin and two of their own script: not the scripts' doing
        assert rows["script_later_q"] >= 0.05 and "cross-script later:" not in text


def test_cross_script_pairs_that_never_emerge_count_as_later():
    """The quickstart's shape: a few cross-script pairs emerge early and the rest never, while most same-script
    pairs emerge mid-series. Timing only the emerged pairs would call cross-script transfer earlier; ranked with
    the never-emerged pairs last (censored at the last checkpoint), it is later, and the interval says so."""
    from xlp.analysis.findings_script import later_share_interval, script_later_test
    from xlp.data.scripts import script_of

    langs = ["en", "de", "fr", "es", "ru", "el", "ar", "zh"]
    pairs = [(s, t) for s in langs for t in langs if s != t]
    rng = np.random.default_rng(0)
    steps = np.array([(900.0 if rng.random() < 0.7 else np.inf) if script_of(s) == script_of(t)
                      else (100.0 if rng.random() < 0.05 else np.inf) for s, t in pairs])
    src, tgt = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    scripts = {lang: script_of(lang) for lang in langs}
    share, p = script_later_test(src, tgt, steps, scripts, np.random.default_rng(1))
    lo, hi = later_share_interval(src, tgt, steps, scripts, np.random.default_rng(2), 0.05)
    assert share > 0.6 and p < 0.05 and 0.5 < lo <= share <= hi
    emerged = np.isfinite(steps)
    early, _ = script_later_test(src[emerged], tgt[emerged], steps[emerged], scripts, np.random.default_rng(1))
    assert early < 0.5  # what the emerged pairs alone would say
