import re

import pandas as pd

from xlp.analysis.reduce import reduce
from xlp.analysis.results import LAYERS_TITLE
from xlp.config import Spec
from xlp.report import SECTIONS, write_report
from xlp.run.manifest import manifest
from xlp.storage import Store

# in-language accuracy at (layer 0, layer 1) per step; en peaks at 100, de at 200
CURVES = {"en": {0: (0.30, 0.30), 100: (0.55, 0.80), 200: (0.60, 0.78)},
          "de": {0: (0.20, 0.25), 100: (0.40, 0.60), 200: (0.50, 0.70)}}


def _spec(tasks=("pos",), languages=("en", "de")) -> Spec:
    return Spec.model_validate({"name": "tiny-run", "output": "x", "checkpoints": [{"path": "x", "step": 0}],
                                "data": {"ud_root": "x", "languages": list(languages)}, "tasks": list(tasks)})


def _probes(steps=(0, 100, 200), langs=("en", "de")) -> pd.DataFrame:
    rows = []
    for step in steps:
        for layer in (0, 1):
            for src in langs:
                for tgt in langs:
                    for seed in (0, 1):
                        v = CURVES[tgt][step][layer] - (0 if src == tgt else 0.1) + (0.01 if seed else -0.01)
                        rows.append(dict(checkpoint=f"step_{step}", step=step, task="pos", layer=layer,
                                         src_lang=src, tgt_lang=tgt, seed=seed, metric="accuracy", value=v,
                                         baseline=0.15, n_train=500, n_test=200, seed_invariant=False))
    return pd.DataFrame(rows)


def _plan(steps, notes=()) -> dict:
    return {"summary": {"checkpoints": len(steps), "steps": list(steps), "layers": [0, 1], "sources": 2,
                        "targets": 2}, "notes": list(notes), "xlp_version": "0.1.0"}


def _report(tmp_path, probes, spec, plan, timings=None):
    results = reduce(probes, spec.analysis, manifest(spec).tasks.configured())
    store = Store(str(tmp_path))
    write_report(store, results, spec, plan, timings)
    return results, store, store.read_bytes("report/index.html").decode()


def _section(page: str, sid: str) -> str:
    return re.search(rf'<section id="{sid}">(.*?)</section>', page, re.S).group(1)


def test_report_sections_figures_and_numbers(tmp_path):
    probes = _probes()
    results, store, page = _report(tmp_path, probes, _spec(), _plan((0, 100, 200), ["a <b>note</b>"]))
    emergence = results.emergence

    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
    figures = ["acquisition", "curves_pos", "transfer_pos", "layers_pos"]
    assert page.count("<img") == page.count("data:image/png;base64,") == len(figures)
    for name in figures:
        for ext in ("png", "svg"):
            assert (store.size(f"report/figures/{name}.{ext}") or 0) > 1000
    assert store.read_bytes("report/figures/curves_pos.png").startswith(b"\x89PNG")
    assert "a &lt;b&gt;note&lt;/b&gt;" in page and "<b>note" not in page
    assert "tiny-run" in _section(page, "summary") and "pandas" in _section(page, "summary")

    # every emergence row is in the HTML table, best_step as an int and best_value to 4 decimals
    table = _section(page, "emergence")
    header = re.findall(r"<th>(.*?)</th>", table)
    cells = [re.findall(r"<td>(.*?)</td>", tr) for tr in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.S)]
    assert len(cells) == len(emergence) == 2 * 2 * 2  # layers x sources x targets
    for row, (_, e) in zip(cells, emergence.iterrows()):
        got = dict(zip(header, row))
        assert got["src_lang"] == e["src_lang"] and got["tgt_lang"] == e["tgt_lang"]
        # three checkpoints can show no trend (p >= 1/3! = 1/6): no curve emerged, and the table says so
        assert got["best_step"] == str(e["best_step"]) and got["emergence_step"] == "did not emerge"
        assert got["best_value"] == f"{e['best_value']:.4f}"
    assert "0.8000" in table and "0.7000" in table  # en's and de's in-language best at layer 1

    # layer 1: mean over languages is 0.70 at step 100 and 0.74 at step 200; en's regret 0.80 - 0.78
    best = _section(page, "best")
    rows = [dict(zip(re.findall(r"<th>(.*?)</th>", best), re.findall(r"<td>(.*?)</td>", tr)))
            for tr in re.findall(r"<tr>(.*?)</tr>", best.split("<tbody>")[1], re.S)]
    assert [r["language"] for r in rows] == ["en", "de"]  # the spec's order
    assert (rows[0]["layer"], rows[0]["best_step"], rows[0]["regret"], rows[0]["avg_best_step"]) == (
        "1", "100", "0.0200", "200")
    assert LAYERS_TITLE in _section(page, "tables")

    # Findings come first, say how they are computed, and state each claim with its numbers
    assert page.index('<section id="findings">') < page.index('<section id="summary">')
    findings = _section(page, "findings")
    assert "Benjamini–Hochberg" in findings and "cross-fitted" in findings.lower()
    assert "pos (layer 1) emerged in 0 of 2 (0 %) languages." in findings  # three checkpoints: no trend possible
    # its tables hold the rows that have numbers (not every task x other task x layer), counts as integers
    tables = re.findall(r"<table.*?</table>", findings, re.S)
    assert tables and "<th>quantity</th>" not in findings
    for t in tables:
        header = re.findall(r"<th>(.*?)</th>", t)
        for tr in re.findall(r"<tr>(.*?)</tr>", t.split("<tbody>")[1], re.S):
            row = dict(zip(header, re.findall(r"<td>(.*?)</td>", tr)))
            assert any(v for k, v in row.items() if k not in ("task", "other_task", "scope", "layer")), row
    assert "<td>2</td>" in findings and "<td>2.0000</td>" not in findings  # n_languages


def test_report_single_checkpoint_single_language_missing_task(tmp_path):
    probes = _probes(steps=(0,), langs=("en",))
    spec = _spec(tasks=("pos", "deprel"), languages=("en",))
    _, store, page = _report(tmp_path, probes, spec, _plan((0,)))
    assert all(f'<section id="{sid}">' in page for sid in SECTIONS)
    assert "No probe results for task deprel" in _section(page, "notes")
    # acquisition (Findings), curves and layers; one language has no transfer, so no transfer figure
    assert page.count("data:image/png;base64,") == 3 and not store.exists("report/figures/transfer_pos.png")
    assert not store.exists("report/figures/curves_deprel.png")


def test_report_with_no_results(tmp_path):
    probes = pd.DataFrame(columns=["checkpoint", "step", "task", "layer", "src_lang", "tgt_lang", "seed", "metric",
                                   "value", "baseline", "n_train", "n_test", "seed_invariant"])
    _, _, page = _report(tmp_path, probes, _spec(), _plan(()))
    assert all(f'<section id="{sid}">' in page for sid in SECTIONS) and "<img" not in page


def test_a_figure_that_fails_is_a_note_not_a_lost_report(tmp_path, monkeypatch):
    from xlp.report import figures

    def broken(results, task, style):
        raise ValueError("no room")

    monkeypatch.setitem(figures.PER_TASK, "layers", broken)
    _, store, page = _report(tmp_path, _probes(), _spec(), _plan((0, 100, 200)))
    assert "Figure layers_pos was skipped: ValueError: no room" in _section(page, "notes")
    assert not store.exists("report/figures/layers_pos.png") and store.exists("report/figures/curves_pos.png")


def test_importing_the_report_imports_no_matplotlib():
    import subprocess
    import sys

    code = "import sys, xlp.report, xlp.run.reduce; print('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_the_driver_plans_the_figures_without_matplotlib():
    """The driver plans the figures and Ray's workers draw them: planning imports no matplotlib (0.3 s of a launch's
    tail, in the driver's one process)."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; sys.path.insert(0, sys.argv[1]); from test_report import _probes, _spec; "
            "from xlp.analysis.reduce import reduce; from xlp.run.manifest import manifest; "
            "from xlp.report.drawing import draw_all; from xlp.report.figures import language_style; "
            "spec = _spec(); results = reduce(_probes(), spec.analysis, manifest(spec).tasks.configured()); "
            "plots = []; draw_all(results, language_style(['en', 'de'], results.probes), "
            "lambda f, xs: plots.extend(xs) or []); "
            "print(sorted(p.name for p in plots), 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)], capture_output=True, text=True,
                         check=True).stdout
    assert out == "['acquisition', 'curves_pos', 'layers_pos', 'transfer_pos'] False\n"


def test_a_control_task_adds_its_selectivity_curves(tmp_path):
    """POS with its control task: the report draws selectivity (POS minus control accuracy) against the step, one
    line per language at the last layer, and the lines are the selectivity table's numbers."""
    from xlp.report.drawing import selectivity
    from xlp.report.figures import language_style

    pos = _probes()
    control = pos.assign(task="pos_control", value=pos.value - 0.2 - pos.step / 1000)
    probes = pd.concat([pos, control], ignore_index=True)
    results, store, page = _report(tmp_path, probes, _spec(("pos", "pos_control")), _plan((0, 100, 200)))
    assert store.read_bytes("report/figures/selectivity_pos.png").startswith(b"\x89PNG")
    assert 'src="data:image/png;base64,' in _section(page, "curves") and "selectivity_pos" in page
    fig = selectivity(results, "selectivity", language_style(["en", "de"], probes)).draw()
    lines = {line.get_label(): line.get_ydata() for line in fig.axes[0].get_lines() if line.get_label() in ("en", "de")}
    table = results.extra["selectivity"][1]
    for lang, ys in lines.items():
        want = table[(table.src_lang == lang) & (table.tgt_lang == lang) & (table.layer == 1)].sort_values("step")
        assert list(ys) == list(want.selectivity) and [round(y, 6) for y in ys] == [0.2, 0.3, 0.4]
