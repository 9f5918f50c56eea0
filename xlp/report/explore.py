"""report/explore.html: one self-contained page (Plotly's offline bundle inlined, no network) in which the reader
picks a task, a layer, languages and a source, and sees the learning curves (hover values, the seeds' range),
the transfer heatmap of emergence steps at that layer, and the layers x steps view. It stays small at the paper's
size: every curve is its seed means (and, in-language, the seeds' min and max) quantised to 16 bits per value
over the task's range of values, base64 in the page; the full tables are linked as CSV, not written as rows."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd

from xlp.analysis.curve_table import seed_curves
from xlp.analysis.results import Results

LEVELS = 65535  # a value is lo + (q - 1) * (hi - lo) / (LEVELS - 1), q in 1..LEVELS
MISSING = 0  # q = 0: no value at this step
CURVE_KEYS = ["task", "layer", "src_lang", "tgt_lang"]


def _pack(values: np.ndarray, lo: float, hi: float) -> str:
    """Values as base64 little-endian uint16: 0 where missing, else 1 + round((v - lo) / (hi - lo) * (LEVELS - 1))."""
    span = (hi - lo) or 1.0
    q = np.where(np.isnan(values), MISSING, 1 + np.rint((values - lo) / span * (LEVELS - 1)))
    return base64.b64encode(q.astype("<u2").tobytes()).decode()


def unpack(text: str, lo: float, hi: float) -> np.ndarray:
    """What the page's script computes from a packed curve (the test reads the page back with it)."""
    q = np.frombuffer(base64.b64decode(text), dtype="<u2").astype(float)
    span = (hi - lo) or 1.0
    return np.where(q == MISSING, np.nan, lo + (q - 1) / (LEVELS - 1) * span)


def explore_data(results: Results, languages: list[str]) -> dict:
    """The page's data: per task its metric, direction, range, layers, languages, curves and emergence steps."""
    p = results.probes
    if p.empty:
        return {"steps": [], "tasks": {}}
    steps = sorted(int(s) for s in p["step"].unique())
    position = {s: i for i, s in enumerate(steps)}
    seeds = seed_curves(p)
    em = results.emergence
    out: dict = {"steps": steps, "tasks": {}}
    for task in results.tasks:
        rows = seeds[seeds["task"] == task]
        if rows.empty:
            continue
        lo, hi = float(rows["value_min"].min()), float(rows["value_max"].max())
        curves = {}
        for (layer, src, tgt), g in rows.groupby(CURVE_KEYS[1:], sort=True):
            where = g["step"].map(position).to_numpy()
            series = {}
            for col, name in ((("value", "mean"), ("value_min", "min"), ("value_max", "max")) if src == tgt
                              else (("value", "mean"),)):
                full = np.full(len(steps), np.nan)
                full[where] = g[col].to_numpy()
                series[name] = _pack(full, lo, hi)
            curves[f"{layer}|{src}|{tgt}"] = series
        emergence = {}
        if not em.empty and "emergence_step" in em:
            for r in em[em["task"] == task].itertuples():
                emergence[f"{r.layer}|{r.src_lang}|{r.tgt_lang}"] = [
                    None if pd.isna(v) else float(v)
                    for v in (r.emergence_step, getattr(r, "emergence_step_lo", None),
                              getattr(r, "emergence_step_hi", None))]
        langs = set(rows["src_lang"]) | set(rows["tgt_lang"])
        out["tasks"][task] = {
            "metric": str(rows["metric"].iloc[0]), "higher_is_better": task not in results.lower_is_better,
            "lo": lo, "hi": hi, "layers": sorted(int(x) for x in rows["layer"].unique()),
            "languages": [x for x in languages if x in langs] + sorted(langs - set(languages)),
            "curves": curves, "emergence": emergence}
    return out


def _plotly_js() -> str:
    import plotly

    return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text(encoding="utf-8")


SCRIPT = Path(__file__).with_name("explore.js")


def explore_page(results: Results, name: str, languages: list[str], tables: list[str]) -> str:
    """The page: controls, three plots, links to the results tables' CSV files."""
    data = json.dumps(explore_data(results, languages), separators=(",", ":"), allow_nan=False)
    links = " ".join(f'<a href="../results/{t}.csv">{t}.csv</a>' for t in tables)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>xlp explore: {name}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1rem 2rem}}label{{margin-right:1rem}}
select[multiple]{{height:6rem;vertical-align:top}}.plot{{width:100%;height:420px}}</style>
<script>{_plotly_js()}</script></head><body>
<h1>xlp run {name}: explore</h1>
<p><a href="index.html">the report</a> · results tables: {links}</p>
<div id="controls"><label>task <select id="task"></select></label>
<label>layer <input id="layer" type="range" min="0" max="0" step="1"> <span id="layer-value"></span></label>
<label>languages <select id="langs" multiple></select></label>
<label>source (its transfer curves) <select id="source"><option value="">in-language</option></select></label></div>
<div id="curves" class="plot"></div><div id="transfer" class="plot"></div><div id="layers" class="plot"></div>
<script id="xlp-data" type="application/json">{data}</script>
<script>{SCRIPT.read_text(encoding="utf-8")}</script></body></html>
"""
