import numpy as np
import pandas as pd

from xlp.orchestrator.analysis import curve_stats, emergence_table


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
    em = emergence_table(pd.DataFrame(rows))
    [r] = em.to_dict("records")
    assert r["best_step"] == 10 and np.isclose(r["best_value"], 0.7)
    assert np.isclose(r["first_value"], 0.2) and np.isclose(r["final_minus_best"], -0.1)
