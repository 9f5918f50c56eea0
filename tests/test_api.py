"""xlp from a notebook: `xlp.load` gives a run's tables with their direction and the report's figures; the
example notebook runs top to bottom on a real run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

import xlp
from xlp.errors import XlpError
from xlp.tasks import BUILT_IN

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "explore.ipynb"


def test_load_gives_the_runs_tables_curves_and_figures(clean_grid):
    from matplotlib.figure import Figure

    spec, run_dir, _, _ = clean_grid
    run = xlp.load(run_dir)
    on_disk = pd.read_parquet(run_dir / "results" / "probes.parquet")
    assert len(run.probes) == len(on_disk) and "correct" not in run.probes  # per-item bytes stay in the file
    assert run.probes.higher_is_better.all() and set(run.probes.metric) == {"accuracy"}
    by_hand = on_disk.groupby(["task", "layer", "src_lang", "tgt_lang", "step"]).value.mean()
    curves = run.curves.set_index(["task", "layer", "src_lang", "tgt_lang", "step"]).value
    pd.testing.assert_series_equal(curves.sort_index(), by_hand.sort_index(), check_names=False)
    assert (run.curves.seeds == 2).all() and (run.curves.value_min <= run.curves.value_max).all()
    emergence = pd.read_parquet(run_dir / "results" / "emergence.parquet")
    pd.testing.assert_frame_equal(run.emergence.drop(columns="higher_is_better"), emergence)
    pd.testing.assert_frame_equal(run.findings, pd.read_parquet(run_dir / "results" / "findings.parquet"))
    figure = run.plot.curves("pos", layer=1, langs=["en", "de"])
    assert isinstance(figure, Figure)
    assert sorted(t.get_text() for t in figure.axes[0].get_legend().get_texts()) == ["de", "en"]
    assert "layer 1" in figure.axes[0].get_title()
    grid = run.plot.transfer("pos", langs=["de", "vi"]).axes[0]
    assert [t.get_text() for t in grid.get_xticklabels()] == ["de", "vi"]
    assert isinstance(run.plot.layers("pos"), Figure)
    with pytest.raises(XlpError, match="no deprel curves"):
        run.plot.curves("deprel")


def test_a_metric_carries_its_direction():
    from xlp.api import _directed

    rows = pd.DataFrame({"task": ["pos", "bpc", "someone_elses"], "value": [0.9, 1.2, 0.5]})
    assert list(_directed(rows, dict(BUILT_IN)).higher_is_better) == [True, False, True]


def test_load_of_a_folder_that_is_not_a_run_says_so(tmp_path):
    with pytest.raises(XlpError, match="no spec.json"):
        xlp.load(tmp_path)


def test_the_example_notebook_runs_top_to_bottom(clean_grid, monkeypatch):
    """Every code cell of examples/explore.ipynb, in order, in one namespace, on a real run."""
    _, run_dir, _, _ = clean_grid
    monkeypatch.setenv("XLP_RUN", str(run_dir))
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    namespace: dict = {"__name__": "__main__"}
    for cell in cells:
        exec(compile("".join(cell["source"]), str(NOTEBOOK), "exec"), namespace)
    assert set(namespace["in_language"].src_lang) == {"en", "de", "vi"}
    assert namespace["sentences"].text.str.len().gt(0).all()
    assert {type(namespace[f]).__name__ for f in ("curves_figure", "transfer_figure", "layers_figure")} == {"Figure"}


def test_import_xlp_stays_light():
    import subprocess

    code = "import sys, xlp; print(sorted(m for m in ('torch', 'ray', 'matplotlib', 'pandas') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
