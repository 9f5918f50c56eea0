import numpy as np
import pandas as pd

from xlp.analysis.curve_table import curve_stats, emergence_table
from xlp.tasks import BUILT_IN


def test_curve_stats_hand_computed():
    steps = np.array([0, 100, 200, 400, 800])
    values = np.array([0.20, 0.50, 0.86, 0.90, 0.88])
    s = curve_stats(steps, values, threshold=0.95)
    assert s["best_step"] == 400 and s["best_value"] == 0.90
    assert s["emergence_step"] == 200  # 0.86 >= 0.95 * 0.90 = 0.855
    # normalised: (v - 0.2) / 0.7 >= 0.95 -> v >= 0.865 -> step 400
    assert s["emergence_step_normalized"] == 400
    assert s["final_step"] == 800 and np.isclose(s["final_minus_best"], -0.02)


def test_best_is_earliest_on_ties_and_flat_curve():
    s = curve_stats(np.array([0, 1, 2]), np.array([0.5, 0.7, 0.7]))
    assert s["best_step"] == 1
    flat = curve_stats(np.array([0, 1]), np.array([0.3, 0.3]))
    assert flat["emergence_step"] == 0 and flat["emergence_step_normalized"] == 0


def test_emergence_table_averages_seeds():
    rows = []
    for step, vals in ((0, (0.1, 0.3)), (10, (0.8, 0.6)), (20, (0.6, 0.6))):
        for seed, v in enumerate(vals):
            rows.append(dict(step=step, task="pos", layer=1, src_lang="en", tgt_lang="de", seed=seed,
                             metric="accuracy", value=v, baseline=0.1))
    em = emergence_table(pd.DataFrame(rows), BUILT_IN)
    [r] = em.to_dict("records")
    assert r["best_step"] == 10 and np.isclose(r["best_value"], 0.7)
    assert np.isclose(r["first_value"], 0.2) and np.isclose(r["final_minus_best"], -0.1)


def test_paired_bootstrap():
    from xlp.analysis.curve_table import paired_bootstrap_p

    rng = np.random.default_rng(0)
    b = rng.random(2000) < 0.80
    a = b | (rng.random(2000) < 0.25)  # a right wherever b is, and on ~5% more items
    assert paired_bootstrap_p(a, b) == 1 / 2001  # every replicate favours a: (0 + 1) / (2000 + 1), never 0
    assert paired_bootstrap_p(b, a) > 0.99
    assert paired_bootstrap_p(a, a) == 1.0  # no difference is never "better"
    c = b.copy()
    c[:3] = ~c[:3]  # a 3-item difference out of 2000 is noise
    assert paired_bootstrap_p(b, c) > 0.01


def test_degradation_significance_and_best_layers():
    from xlp.analysis.curve_table import best_layers

    n = 400
    rng = np.random.default_rng(1)
    base = rng.random(n) < 0.7
    best = base | (rng.random(n) < 0.5)   # much better at step 10
    tiny = base.copy()
    tiny[0] = ~tiny[0]                      # step 20 differs from step 0 by one item
    rows = []
    for tgt, curve in (("de", [(0, base), (10, best), (20, base)]), ("fr", [(0, base), (10, tiny), (20, base)])):
        for step, correct in curve:
            rows.append(dict(step=step, task="pos", layer=1, src_lang="en", tgt_lang=tgt, seed=0, metric="accuracy",
                             value=correct.mean(), baseline=0.2, n_test=n, correct=np.packbits(correct).tobytes()))
    probes = pd.DataFrame(rows)
    em = emergence_table(probes, BUILT_IN).set_index("tgt_lang")  # degradation is cross-fitted over halves of the items
    assert em.loc["de", "degradation_significant"] and em.loc["de", "degradation_q"] < 0.01
    assert not em.loc["fr", "degradation_significant"]

    layered = pd.DataFrame([dict(task="pos", src_lang="en", tgt_lang="en", step=s, layer=la, value=v)
                            for s, vals in ((0, (0.5, 0.6, 0.6)), (10, (0.7, 0.8, 0.75)), (20, (0.7, 0.8, 0.65)))
                            for la, v in enumerate(vals)])
    bl = best_layers(layered, BUILT_IN).set_index("step")
    assert bl.loc[0, "best_layer"] == 1 and bl.loc[10, "best_layer"] == 1  # lowest layer on ties
    assert bl.loc[10, "last_layer"] == 2 and np.isclose(bl.loc[10, "last_layer_value"], 0.75)
    # the last layer peaks at step 10 (0.75) and ends at 0.65: it lost 0.10 while layer 1 held 0.8
    assert (bl.last_layer_best_step == 10).all() and np.allclose(bl.last_layer_final_minus_best, -0.10)


def test_lower_is_better_metric_bpc():
    """bpc 5.0, 4.0, 3.5, 3.6: best (the minimum) at 200, final - best = +0.1 (a loss, not a gain); four
    checkpoints that are not in order are no trend (the smallest p-value of 4 is 1/24), so no emergence step.
    bpc 5.0, 4.0, 3.5, 3.4, 3.35 falls at every checkpoint: it emerged; best / 0.95 = 3.526 is first reached
    at 200, the normalised gain (5 - v) / 1.65 >= 0.95 (v <= 3.4325) at 400."""
    def table(values):
        rows = [dict(task="bpc", layer=4, src_lang="en", tgt_lang="en", metric="bpc", step=s, seed=0, value=v,
                     baseline=6.0) for s, v in zip((0, 100, 200, 400, 800), values)]
        return emergence_table(pd.DataFrame(rows), BUILT_IN, 0.95).iloc[0]

    e = table((5.0, 4.0, 3.5, 3.6))
    assert (e.best_step, e.best_value, e.first_value, e.final_value) == (200, 3.5, 5.0, 3.6)
    assert abs(e.final_minus_best - 0.1) < 1e-12
    assert not e.emerged and np.isnan(e.emergence_step) and np.isnan(e.emergence_step_normalized)
    e = table((5.0, 4.0, 3.5, 3.4, 3.35))
    assert e.emerged and (e.emergence_step, e.emergence_step_normalized) == (200, 400)
    assert np.isnan(e.degradation_p)  # no per-item scores for bpc: no degradation test


def test_a_metrics_direction_comes_from_the_runs_tasks():
    """The analysis asks the run's own tasks (name -> Task) for a metric's direction, not a process-wide
    registry: a lower-is-better task that no registry knows scores as one, and the rows of a task the run does
    not have get the Task defaults (higher is better)."""
    from xlp.analysis.curve_table import best_layers
    from xlp.tasks.base import Task

    class Loss(Task):
        name, metric, higher_is_better, definition = "loss", "nats", False, "a loss"

    rows = pd.DataFrame([dict(task="loss", layer=0, src_lang="en", tgt_lang="en", metric="nats", step=s, seed=0,
                              value=v, baseline=9.0) for s, v in zip((0, 100, 200), (5.0, 3.0, 4.0))])
    assert emergence_table(rows, {"loss": Loss()}).iloc[0].best_step == 100
    assert emergence_table(rows, {}).iloc[0].best_step == 0
    assert best_layers(rows, {"loss": Loss()}).last_layer_best_step.tolist() == [100] * 3


def test_status_throughput_counts_parallel_workers_and_skips_gaps():
    """Two units ran side by side (0-10 s and 2-8 s), then nothing for a while, then one more (20-25 s):
    the cluster was busy 15 s, not the 21 worker-seconds, and the 10 s gap between launches is not counted."""
    from xlp.run.status import busy_seconds

    recs = [{"finished": 10, "seconds": 10}, {"finished": 8, "seconds": 6}, {"finished": 25, "seconds": 5}]
    assert busy_seconds(recs) == 15
    assert busy_seconds([]) == 0


def _bpc_rows(bits_by_step, chars):
    """probes.parquet rows of one bpc curve whose per-sentence bits and characters are given."""
    return [dict(step=step, task="bpc", layer=4, src_lang="en", tgt_lang="en", seed=0, metric="bpc",
                 value=bits.sum() / chars.sum(), baseline=8.0, n_test=len(chars),
                 item_sums=np.stack([bits, chars]).astype(np.float32).tobytes())
            for step, bits in bits_by_step]


def test_bootstrap_of_a_ratio_metric_equals_a_plain_loop():
    """The one-matrix-product bootstrap of bits per character (per-sentence bits and characters, two seeds that
    differ) gives, per replicate, what a plain loop gives: resample the sentences (and seeds), sum bits and
    characters, divide."""
    from xlp.analysis.curves import bootstrap
    from xlp.analysis.stats import multinomial_weights

    rng = np.random.default_rng(3)
    n, T, K, n_boot = 31, 3, 2, 50
    chars = rng.integers(5, 80, size=n).astype(float)
    items = np.stack([np.stack([chars * rng.uniform(1, 5, size=n), np.broadcast_to(chars, (n,))], axis=0)
                      for _ in range(T * K)]).reshape(T, K, 2, n).astype(np.float32)
    bpc = BUILT_IN["bpc"].value_from_sums
    out = bootstrap({"c": items}, n, np.random.default_rng(7), n_boot, value=bpc, sign=-1)["c"]

    again = np.random.default_rng(7)  # the same draws, in the same order
    perm = again.permutation(n)
    halves = [np.sort(perm[: n // 2]), np.sort(perm[n // 2:])]
    weights = [multinomial_weights(again, n_boot, len(h)) for h in halves]
    seeds = multinomial_weights(again, n_boot, K).T  # (n_boot, K) counts
    whole_bits = np.zeros((n_boot, T))
    whole_chars = np.zeros((n_boot, T))
    for h, (idx, W) in enumerate(zip(halves, weights)):
        for r in range(n_boot):
            for t in range(T):
                bits = sum(seeds[r, k] * (items[t, k, 0, idx] * W[:, r]).sum() for k in range(K)) / K
                chars_r = sum(seeds[r, k] * (items[t, k, 1, idx] * W[:, r]).sum() for k in range(K)) / K
                assert np.isclose(out["boot"][h][r, t], -bits / chars_r, rtol=1e-5)
                whole_bits[r, t] += bits
                whole_chars[r, t] += chars_r
        point = items[:, :, 0, idx].sum(axis=2).mean(axis=1) / items[:, :, 1, idx].sum(axis=2).mean(axis=1)
        assert np.allclose(out["point"][h], -point, rtol=1e-5)
    assert np.allclose(out["whole"], -whole_bits / whole_chars, rtol=1e-5)


def test_bpc_claims_carry_intervals_and_hold_on_a_null_series():
    """With per-sentence bits, bpc curves get what accuracy curves get: a curve that falls emerges with an
    interval on its step; one whose text is scored alike at every checkpoint (the same sentences' bits plus
    noise) does not emerge and does not degrade; one that rises again at the end degrades significantly."""
    rng = np.random.default_rng(0)
    n = 300
    chars = rng.integers(20, 120, size=n).astype(float)
    hard = rng.uniform(0.6, 1.4, size=n)  # how hard each sentence is, at every checkpoint

    def bits(bpc, noise=0.05):
        return chars * bpc * hard * rng.lognormal(0, noise, size=n)

    steps = (0, 100, 200, 400, 800, 1600)
    rows = []
    for tgt, levels in (("de", (5.0, 4.2, 3.7, 3.5, 3.45, 3.4)), ("fr", (4.0,) * 6),
                        ("fi", (5.0, 4.0, 3.5, 3.4, 3.8, 4.0))):
        rows += [{**r, "tgt_lang": tgt, "src_lang": tgt} for r in _bpc_rows(
            [(s, bits(v)) for s, v in zip(steps, levels)], chars)]
    em = emergence_table(pd.DataFrame(rows), BUILT_IN).set_index("tgt_lang")
    de, flat, fi = em.loc["de"], em.loc["fr"], em.loc["fi"]
    assert de.emerged and de.emergence_step_lo <= de.emergence_step <= de.emergence_step_hi
    assert de.emergence_step_hi <= 400 and not de.degradation_significant
    assert not flat.emerged and np.isnan(flat.emergence_step) and not flat.degradation_significant
    assert fi.degradation_significant and fi.degradation > 0.3 and fi.degradation_q < 0.01


def test_emergence_in_tokens_seen_where_every_checkpoint_says():
    """The emergence table gives the best and emergence checkpoints as tokens seen too (series whose steps
    are not comparable, such as Pythia's and OLMo's, compare in tokens), and leaves them null when any
    checkpoint's tokens are unknown rather than guessing."""
    rng = np.random.default_rng(5)
    n, steps = 400, (0, 100, 200, 400, 800, 1600)
    rows = []
    for step, p in zip(steps, (0.3, 0.5, 0.7, 0.8, 0.85, 0.85)):
        correct = rng.random(n) < p
        rows.append(dict(step=step, tokens=step * 2_000_000, task="pos", layer=1, src_lang="en", tgt_lang="en",
                         seed=0, metric="accuracy", value=correct.mean(), baseline=0.2, n_test=n,
                         correct=np.packbits(correct).tobytes()))
    e = emergence_table(pd.DataFrame(rows), BUILT_IN).iloc[0]
    assert e.emerged
    for tokens, step in (("best_tokens", "best_step"), ("emergence_tokens", "emergence_step"),
                         ("emergence_tokens_lo", "emergence_step_lo"), ("emergence_tokens_hi", "emergence_step_hi")):
        assert e[tokens] == e[step] * 2_000_000, tokens
    rows[2]["tokens"] = None
    e = emergence_table(pd.DataFrame(rows), BUILT_IN).iloc[0]
    assert np.isnan(e.best_tokens) and np.isnan(e.emergence_tokens) and not np.isnan(e.emergence_step)


def test_counting_wins_by_matrix_products_equals_comparing_items():
    """The per-pair counts behind the sign test (items on which checkpoint j is above i), for 0/1 correctness
    with one seed and with three that differ, by level-indicator matrix products equal comparing every item."""
    from xlp.analysis.curves import item_wins

    rng = np.random.default_rng(2)
    for K, sign in ((1, 1), (3, 1), (3, -1)):
        items = (rng.random((7, K, 1, 500)) < np.linspace(0.2, 0.9, 7)[:, None, None, None]).astype(np.uint8)
        mean = sign * items[:, :, 0].mean(axis=1)  # (T, n), seed-averaged and signed
        plain = (mean[None, :, :] > mean[:, None, :]).sum(axis=2)
        fast = item_wins(items, lambda sums, count, s=sign: s * sums[0] / count, sign)
        assert fast.dtype.kind == "i" and (fast == plain).all(), (K, sign)


def test_pair_signs_from_counts_equal_the_mean_over_replicates():
    """Which checkpoint pairs differ beyond the noise: counting replicates (j above i; below is the transpose)
    gives the signs of comparing every replicate and averaging, on replicates with ties and at the threshold."""
    from xlp.analysis.stats import bootstrap_pair_signs

    rng = np.random.default_rng(3)
    decided = []
    for trial in range(60):
        T, B = int(rng.integers(2, 40)), int(rng.choice([40, 100, 999, 1000]))
        curve = rng.normal(size=T).cumsum()  # replicates scattered around a curve, rounded (ties)
        boot = np.round(curve + rng.normal(size=(B, T)) * rng.choice([0.1, 1.0, 3.0]), int(rng.integers(0, 3)))
        alpha = float(rng.choice([0.01, 0.05, 0.1, 0.5]))
        above = (boot[:, None, :] > boot[:, :, None]).mean(axis=0) >= 1 - alpha / 2
        below = (boot[:, None, :] < boot[:, :, None]).mean(axis=0) >= 1 - alpha / 2
        plain = above.astype(float) - below
        assert np.array_equal(bootstrap_pair_signs(boot, alpha), plain), trial
        decided.append(np.abs(plain).mean())
    assert 0 < np.mean(decided) < 0.9  # the trials hold pairs that differ beyond the noise, and pairs that do not
