"""report/explore.html: every number it carries is a results table's, and in a real browser with no network the
reader's choices of task, layer, languages and source change the curves and the heatmap, with no script error."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xlp.report.explore import explore_page, unpack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from report_scale import LANGS, STEPS, synthetic_results  # noqa: E402


def _data(html: str) -> dict:
    return json.loads(re.search(r'<script id="xlp-data" type="application/json">(.*?)</script>', html, re.S).group(1))


def test_the_pages_numbers_are_the_runs(clean_grid):
    """Each curve read back from the page equals the seed mean (and, in-language, the seeds' range) of
    probes.parquet to within its 16-bit step; each emergence step and interval is emergence.parquet's."""
    _, run, _, _ = clean_grid
    data = _data((run / "report" / "explore.html").read_text())
    probes = pd.read_parquet(run / "results" / "probes.parquet")
    emergence = pd.read_parquet(run / "results" / "emergence.parquet")
    task = data["tasks"]["pos"]
    assert data["steps"] == sorted(probes.step.unique()) and task["higher_is_better"]
    tol = (task["hi"] - task["lo"]) / 65534 * 0.51
    seeds = probes.groupby(["layer", "src_lang", "tgt_lang", "step"]).value.agg(["mean", "min", "max"])
    assert len(task["curves"]) == len(seeds.groupby(level=[0, 1, 2]))
    for key, packed in task["curves"].items():
        layer, src, tgt = key.split("|")
        want = seeds.loc[(int(layer), src, tgt)]
        for col, text in packed.items():
            np.testing.assert_allclose(unpack(text, task["lo"], task["hi"]), want[col].to_numpy(), atol=tol)
        assert set(packed) == ({"mean", "min", "max"} if src == tgt else {"mean"})
    for r in emergence.itertuples():
        got = task["emergence"][f"{r.layer}|{r.src_lang}|{r.tgt_lang}"]
        want = [r.emergence_step, r.emergence_step_lo, r.emergence_step_hi]
        assert [None if pd.isna(w) else w for w in want] == got


def test_choices_redraw_the_plots_offline_in_chromium(tmp_path):
    browser = shutil.which("chromium")
    playwright = pytest.importorskip("playwright.sync_api")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (see the README's set-up)")
    results = synthetic_results(langs=LANGS[:6], cross=3, steps=STEPS[::5], layers=3)
    page_file = tmp_path / "explore.html"
    page_file.write_text(explore_page(results, "synthetic", LANGS[:6], ["probes", "emergence"]))
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=browser, args=["--no-sandbox", "--disable-background-networking"])
        context = b.new_context(offline=True)
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(page_file.as_uri())
        page.wait_for_function("document.getElementById('curves').data !== undefined")

        def state():
            return page.evaluate("""() => ({
                names: document.getElementById('curves').data.map(t => t.name),
                first: document.getElementById('curves').data[0].y,
                title: document.getElementById('curves').layout.title.text,
                heat: document.getElementById('transfer').data[0].z,
                rows: document.getElementById('layers').data[0].y})""")

        first = state()
        assert first["names"] == LANGS[:6] and "pos" in first["title"] and "layer 2" in first["title"]
        page.fill("#layer", "0")
        page.dispatch_event("#layer", "input")
        assert "layer 0" in state()["title"]
        page.select_option("#langs", LANGS[:2])
        assert state()["names"] == LANGS[:2]
        page.select_option("#source", LANGS[0])
        across = state()
        assert across["names"] == [f"{LANGS[0]}→{x}" for x in LANGS[:2]] and f"from {LANGS[0]}" in across["title"]
        page.select_option("#task", "bpc")
        bpc = state()
        assert "bpc" in bpc["title"] and bpc["first"] != first["first"] and bpc["rows"] == ["3"]
        assert bpc["heat"] != first["heat"]
        b.close()
    assert not errors, errors
