"""`xlp compare` across runs, on emergence tables written as real runs write them."""

import json

import numpy as np
import pandas as pd
from conftest import run_xlp

from xlp.analysis.curve_table import CURVE_COLUMNS


def _run(root, name, curves, alpha=0.05):
    """A run folder with its spec's name and results/emergence.parquet holding `curves`:
    {(task, layer, language): (emerged, emergence step, best step, degraded)}."""
    (root / "results").mkdir(parents=True)
    (root / "spec.json").write_text(json.dumps({"name": name, "output": str(root), "analysis": {"alpha": alpha},
                                                "pooling": "auto", "checkpoints": [{"path": "ckpts/step_*"}],
                                                "data": {"ud_root": "ud", "languages": ["en"]}}))
    rows = [{**dict.fromkeys(CURVE_COLUMNS), "task": t, "layer": layer, "src_lang": lang, "tgt_lang": lang,
             "metric": "accuracy", "emerged": em, "emergence_step": step if em else np.nan, "best_step": best,
             "degradation_significant": deg}
            for (t, layer, lang), (em, step, best, deg) in curves.items()]
    pd.DataFrame(rows).astype({"emergence_step": float}).to_parquet(root / "results" / "emergence.parquet")
    return root


def test_compare_counts_emergence_and_its_spread_across_runs(tmp_path):
    """Three pretraining seeds: per curve, in how many runs it emerged and the spread of its step, computed
    here by hand from each run's table; a curve one run lacks is left out; the sentence states the counts."""
    seeds = [
        {("pos", 4, "en"): (True, 200, 800, False), ("pos", 4, "de"): (True, 400, 800, False),
         ("pos", 4, "fi"): (False, None, 100, False), ("pos", 3, "en"): (True, 100, 800, False),
         ("pos", 4, "vi"): (True, 100, 800, False)},
        {("pos", 4, "en"): (True, 300, 800, False), ("pos", 4, "de"): (False, None, 400, True),
         ("pos", 4, "fi"): (False, None, 200, False), ("pos", 3, "en"): (True, 100, 800, False)},
        {("pos", 4, "en"): (True, 800, 400, True), ("pos", 4, "de"): (True, 200, 800, False),
         ("pos", 4, "fi"): (False, None, 800, False), ("pos", 3, "en"): (True, 200, 800, False)},
    ]
    runs = [_run(tmp_path / f"seed_{i}", f"seed_{i}", c) for i, c in enumerate(seeds)]
    r = run_xlp("compare", *map(str, runs), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    got = pd.read_parquet(tmp_path / "out" / "comparison.parquet").set_index(["task", "layer", "src_lang"])
    assert ("pos", 4, "vi") not in got.index and len(got) == 4  # vi is only in seed_0
    for key in got.index:
        runs_of = [s[key] for s in seeds]
        steps = [step for em, step, _, _ in runs_of if em]
        row = got.loc[key]
        assert row.n_runs == 3 and row.n_emerged == len(steps), key
        if steps:
            assert (row.emergence_step_median, row.emergence_step_min, row.emergence_step_max) == \
                (np.median(steps), min(steps), max(steps)), key
        else:
            assert np.isnan(row.emergence_step_median), key
        assert row.n_distinct_best == len({best for _, _, best, _ in runs_of}), key
        assert row.n_degraded == sum(deg for *_, deg in runs_of), key
    out = " ".join(r.stdout.split())
    assert ("pos (layer 4): emerged in each of the 3 runs in 1 of 3 languages, in none of them in 1; where it "
            "emerged in two runs or more, its step differs across runs by up to 600 steps (en: 200–800)") in out
    assert "worse than the best in at least one run in 2 of 3 languages" in out
    per_run = pd.read_parquet(tmp_path / "out" / "per_run.parquet")
    assert sorted(per_run.run.unique()) == ["seed_0", "seed_1", "seed_2"]

    assert "differ" not in r.stderr  # the same settings
    _run(tmp_path / "strict", "strict", seeds[0], alpha=0.01)
    r = run_xlp("compare", str(runs[0]), str(tmp_path / "strict"))
    assert r.returncode == 0 and "the runs differ in analysis" in r.stderr and "pooling" not in r.stderr

    r = run_xlp("compare", str(runs[0]))
    assert r.returncode == 1 and "two runs or more" in r.stderr and "Traceback" not in r.stderr
    r = run_xlp("compare", str(runs[0]), str(tmp_path / "nothing"))
    assert r.returncode == 1 and "no results/emergence.parquet" in r.stderr
