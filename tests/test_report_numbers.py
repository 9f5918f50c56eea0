"""Every number the report shows is one the results tables hold: the page is parsed back (its sentences, its tables,
the numbers in its text) and checked against findings.parquet, the emergence table and the other results tables, so a
report that recomputed a number its own way, rounded it differently or dropped a row would fail here."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pandas as pd
import pytest

from xlp.analysis.findings import FINDINGS
from xlp.analysis.reduce import reduce
from xlp.config import Spec
from xlp.report import write_report
from xlp.report.page import PACKAGES, _version
from xlp.report.tables import STEP_COLUMNS
from xlp.run.manifest import manifest
from xlp.storage import Store

STEPS = (0, 25, 50, 100, 200, 400, 800)
LANGS = ("en", "de", "fr")
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?(?:e[+-]?\d+)?")


def _probes(n: int = 200) -> pd.DataFrame:
    """pos rises early, deprel later, cross-lingual later still; layer 1 drops at the final checkpoint. One curve
    lacks a checkpoint (a failed unit), so a table that handled it its own way would differ from the findings."""
    rng = np.random.default_rng(0)
    rows = []
    for ti, task in enumerate(("pos", "deprel")):
        for layer in (0, 1):
            for src in LANGS:
                for tgt in LANGS:
                    lag = 2 * ti + (src != tgt) + LANGS.index(tgt) % 2
                    p = [0.3 + 0.55 * min(1, max(0, (i - 0.5 * lag) / 2.5)) for i in range(len(STEPS))]
                    p[-1] -= 0.2 * layer
                    for step, q in zip(STEPS, p):
                        if (task, layer, src, tgt, step) == ("pos", 1, "fr", "fr", 100):
                            continue
                        hit = rng.random(n) < q
                        row = {"checkpoint": f"step_{step}", "step": step, "tokens": step * 65_536,
                               "task": task, "layer": layer,
                               "src_lang": src, "tgt_lang": tgt, "seed": 0, "metric": "accuracy",
                               "value": hit.mean(), "baseline": 0.2, "n_train": 100, "n_test": n,
                               "seed_invariant": True, "correct": np.packbits(hit).tobytes()}
                        rows.append(row)
                        if task != "pos":
                            continue
                        control = rng.random(n) < 0.3 + 0.5 * (q - 0.3)  # the control task: far less to learn
                        rows.append({**row, "task": "pos_control", "value": control.mean(),
                                     "correct": np.packbits(control).tobytes()})
                        if src == tgt:  # compression (probe.mdl): each training sentence's uniform and online bits
                            uniform = rng.integers(5, 30, n) * 4.0
                            online = uniform / (1 + 6 * (q - 0.3)) * rng.uniform(0.8, 1.2, n)
                            rows.append({**row, "task": "pos_mdl", "metric": "compression", "correct": None,
                                         "value": uniform.sum() / online.sum(), "baseline": 1.0,
                                         "item_sums": np.stack([uniform, online]).astype(np.float32).tobytes(),
                                         "codelength": online.sum(), "uniform_codelength": uniform.sum()})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    spec = Spec.model_validate({"name": "numbers", "output": "x", "checkpoints": [{"path": "x", "step": 0}],
                                "data": {"ud_root": "x", "languages": list(LANGS)},
                                "tasks": ["pos", "pos_control", "deprel"], "probe": {"mdl": True},
                                "analysis": {"bootstrap": 200}})
    plan = {"summary": {"checkpoints": len(STEPS), "steps": list(STEPS), "layers": [0, 1], "sources": 3,
                        "targets": 3}, "notes": []}
    timings = {"probe": "84 units, 12.5 s of worker time, 756 rows, 6.1 s busy"}
    results = reduce(_probes(), spec.analysis, manifest(spec).tasks.configured())
    tmp = tmp_path_factory.mktemp("run")
    store = Store(str(tmp))
    write_report(store, results, spec, plan, timings)
    tables = {}
    for name, table in results.tables().items():  # as the run writes them, read back
        table.to_parquet(tmp / f"{name}.parquet", index=False)
        tables[name] = pd.read_parquet(tmp / f"{name}.parquet")
    return store.read_bytes("report/index.html").decode(), tables, results, spec, plan, timings


def _section(page: str, sid: str) -> str:
    return re.search(rf'<section id="{sid}">(.*?)</section>', page, re.S).group(1)


def _rows(table: str) -> list[dict[str, str]]:
    header = [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", table.split("<tbody>")[0])]
    return [dict(zip(header, (html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", tr, re.S))))
            for tr in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.S)]


def _shown(v) -> set[str]:
    """How a table value may appear in a cell: blank if missing, integers as such, floats to 4 decimals."""
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return {""}
    if isinstance(v, (bool, np.bool_)):
        return {str(bool(v))}
    if isinstance(v, (int, np.integer)):
        return {str(int(v)), f"{int(v):,}"}
    if isinstance(v, (float, np.floating)):
        return {f"{v:.4f}", str(int(v)), f"{int(v):,}"} if float(v).is_integer() else {f"{v:.4f}"}
    return {str(v)}


def _matches(cells: dict[str, str], row: pd.Series, steps=()) -> None:
    for col, cell in cells.items():
        v = row[col]
        want = {"did not emerge"} if col in steps and pd.isna(v) else _shown(v)
        assert cell in want, (col, cell, v, dict(row))


def test_the_findings_on_the_page_are_findings_parquet(run):
    page, tables, *_ = run
    findings = tables["findings"]
    parts = re.split(r"<h3>(.*?)</h3>", _section(page, "findings"))
    titled = dict(zip(parts[1::2], parts[2::2]))
    assert list(titled) == [html.escape(t) for t in FINDINGS.values()]
    for key, body in zip(FINDINGS, titled.values()):
        f = findings[findings.finding == key]
        said = [html.unescape(x) for x in re.findall(r"<li>(.*?)</li>", body, re.S)]
        assert said == list(f[f.quantity == "sentence"].text)  # every sentence, verbatim and in order
        numbers = f[(f.quantity != "sentence") & (f.src_lang == "")]
        shown = re.findall(r"<table.*?</table>", body, re.S)
        assert len(shown) == (not numbers.empty)
        if numbers.empty:
            continue
        rows = _rows(shown[0])
        keys = numbers[["task", "other_task", "scope", "layer"]].drop_duplicates()
        assert len(rows) == len(keys)
        for cells in rows:
            k = {c: cells.get(c, "") for c in ("task", "other_task", "scope")}
            sel = numbers[(numbers.task == k["task"]) & (numbers.other_task == k["other_task"])
                          & (numbers.scope == k["scope"]) & (numbers.layer == int(cells["layer"]))]
            assert len(sel), cells
            for quantity, cell in cells.items():
                if quantity in k or quantity == "layer":
                    continue
                value = sel.loc[sel.quantity == quantity, "value"]
                assert cell in (_shown(value.iloc[0]) if len(value) else {""}), (key, quantity, cell, value.tolist())


def test_the_best_checkpoints_are_finding_d_per_language(run):
    page, tables, *_ = run
    f = tables["findings"]
    per = f[(f.finding == "best") & (f.src_lang != "") & (f.quantity != "sentence")]
    per = per[per.layer == per.groupby("task").layer.transform("max")]
    avg = f[(f.finding == "best") & (f.quantity == "avg_best_step") & (f.src_lang == "")].set_index(["task", "layer"])
    rows = _rows(re.search(r"<table.*?</table>", _section(page, "best"), re.S).group(0))
    assert len(rows) == per.quantity.eq("regret").sum() == 4 * len(LANGS)  # pos, pos_control, pos_mdl, deprel
    for cells in rows:
        mine = per[(per.task == cells["task"]) & (per.src_lang == cells["language"])
                   & (per.layer == int(cells["layer"]))].set_index("quantity").value
        assert cells["best_step"] in _shown(mine["best_step"]) and cells["regret"] in _shown(mine["regret"])
        assert cells["avg_best_step"] in _shown(avg.value[(cells["task"], int(cells["layer"]))])


def test_the_emergence_table_and_the_other_tables_are_the_results_tables(run):
    page, tables, results, *_ = run
    shown = _rows(_section(page, "emergence"))
    assert len(shown) == len(tables["emergence"])
    # curves that emerged show their step, its interval and the same in tokens seen, from the table
    assert {"emergence_step", "emergence_step_lo", "emergence_step_hi", "emergence_tokens", "best_tokens"} <= set(
        shown[0]) and sum(cells["emergence_step"] != "did not emerge" for cells in shown) >= len(shown) // 2
    for cells, (_, row) in zip(shown, tables["emergence"].iterrows()):
        _matches(cells, row, STEP_COLUMNS)
    parts = re.split(r"<h3>(.*?)</h3>", _section(page, "tables"))
    by_title = {title: name for name, (title, _) in results.extra.items()} | {"best layer per checkpoint "
                                                                              "(in-language)": "layers"}
    assert [html.unescape(t) for t in parts[1::2]] == [title for title, _ in results.titled_tables().values()]
    for title, body in zip(parts[1::2], parts[2::2]):
        table = tables[by_title[html.unescape(title)]]
        rows = _rows(body)
        assert len(rows) == len(table)
        for cells, (_, row) in zip(rows, table.iterrows()):
            _matches(cells, row)


def test_every_other_number_on_the_page_is_a_setting_the_run_states(run):
    """Outside the results' tables and sentences (checked above) and the spec itself, the page's numbers are the
    run's settings, plan, timings and package versions, or the layers its figures show."""
    page, tables, results, spec, plan, timings = run
    said = set(tables["findings"].text)
    text = re.sub(r"<table.*?</table>|<pre>.*?</pre>|<style>.*?</style>|<img[^>]*>", " ", page, flags=re.S)
    text = " ".join(x for x in (html.unescape(t) for t in re.split(r"<[^>]+>", text)) if x.strip() not in said)
    stated = " ".join([spec.model_dump_json(), json.dumps(plan), *timings.values(), *results.definitions.values(),
                       *(_version(p) for p in PACKAGES), " ".join(map(str, results.probes.layer.unique()))])
    allowed = set(NUMBER.findall(stated)) | {f"{100 * (1 - spec.analysis.alpha):.0f}"}  # the intervals' level
    prose = {"1", "2", "3"}  # the procedure's "(1)", "(2)", "(3)" and "3 checkpoints or fewer"
    assert set(NUMBER.findall(text)) - allowed - prose == set()
