"""The report's HTML page: its sections, from the results and the figures drawn from them."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from importlib import metadata

import pandas as pd

from xlp.analysis.findings import FINDINGS
from xlp.analysis.results import Results
from xlp.config import Spec
from xlp.report.figures import Drawn
from xlp.report.prose import definitions, procedure
from xlp.report.tables import (
    best_per_language,
    emergence_display,
    finding_numbers,
    finding_sentences,
    html_table,
)

PACKAGES = ["xlp", "torch", "transformers", "ray", "pyarrow", "numpy", "pandas", "matplotlib"]
SECTIONS = ["findings", "summary", "definitions", "notes", "curves", "transfer", "layers", "best", "emergence",
            "tables", "spec"]
TITLES = {"findings": "Findings", "best": "Best checkpoints", "tables": "Tables", "spec": "Spec",
          "curves": "Learning curves", "transfer": "Cross-lingual transfer", "layers": "Layers × steps",
          "emergence": "Emergence table"}
CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f3f3f3}figure{margin:1em 0}img{max-width:100%}figcaption{font-size:13px;color:#444}
pre{background:#f6f6f6;padding:1em;font-size:12px;overflow:auto}dt{font-weight:600}dd{margin:0 0 .6em 1.5em}"""
esc = html.escape


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def _poolings(probes: pd.DataFrame, asked: str) -> str:
    """The pooling the word vectors got, as recorded in the rows (`auto` resolved per checkpoint)."""
    used = sorted(set(probes["pooling"].dropna())) if "pooling" in probes else []
    return f"{asked}: {', '.join(used)}" if used and used != [asked] else asked


def figure_html(f: Drawn) -> str:
    data = base64.b64encode(f.png).decode()
    return (f'<figure><img alt="{esc(f.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(f.caption)} (<code>figures/{esc(f.name)}.svg</code>)</figcaption></figure>")


def _findings(results: Results, spec: Spec, acquisition: str) -> str:
    parts = [procedure(spec.analysis)]
    findings = results.findings
    if findings.empty:
        return parts[0] + "<p>No curves, so no findings.</p>"
    for key, title in FINDINGS.items():
        sentences = finding_sentences(findings, key)
        parts.append(f"<h3>{esc(title)}</h3>")
        parts.append("<ul>" + "".join(f"<li>{esc(t)}</li>" for t in sentences) + "</ul>" if sentences
                     else "<p>Nothing to compute for this run.</p>")
        numbers = finding_numbers(findings, key)
        if len(numbers):
            parts.append(html_table(numbers))
        if key == "acquisition":
            parts.append(acquisition)
    return "".join(parts)


def _summary(spec: Spec, plan: dict, timings: Mapping[str, str]) -> str:
    s = plan.get("summary", {})
    items = [("run", spec.name), ("checkpoints", s.get("checkpoints")),
             ("steps", ", ".join(map(str, s.get("steps", [])))), ("tasks", ", ".join(spec.tasks)),
             ("layers", s.get("layers")), ("sources", s.get("sources")), ("targets", s.get("targets")),
             *((f"timing: {stage}", t) for stage, t in timings.items()),
             ("versions", ", ".join(f"{p} {_version(p)}" for p in PACKAGES))]
    return "<ul>" + "".join(f"<li>{esc(k)}: {esc(str(v))}</li>" for k, v in items) + "</ul>"


def _best(results: Results, languages: Sequence[str]) -> str:
    table = best_per_language(results.findings, results.tasks, languages)
    if table.empty:
        return "<p>No in-language results.</p>"
    return ("<p>Finding (d) per language, at each task's last layer (findings.parquet has every layer): the best "
            "checkpoint, and the regret under the one checkpoint best on average over languages "
            "(<code>avg_best_step</code>). Each curve's best and final values are in the emergence table.</p>"
            + html_table(table))


ROWS_IN_PAGE = 500  # a larger table is linked (CSV, Parquet) and explored in explore.html, not written as rows


def _rows_or_link(table: pd.DataFrame, name: str) -> str:
    if len(table) <= ROWS_IN_PAGE:
        return html_table(table)
    return (f'<p>{len(table):,} rows: <a href="../results/{name}.csv">{name}.csv</a>, '
            f'<a href="../results/{name}.parquet">{name}.parquet</a>; explore them in '
            '<a href="explore.html">explore.html</a>.</p>')


def page(results: Results, spec: Spec, plan: dict, timings: Mapping[str, str],
         figures: Mapping[str, Sequence[Drawn]], notes: Sequence[str], languages: Sequence[str]) -> str:
    """The whole page: every section of SECTIONS, in order, with the figures inline; `languages` in the order
    the page lists them."""
    shown = {kind: "".join(figure_html(f) for f in drawn) for kind, drawn in figures.items()}
    body = {
        "findings": _findings(results, spec, shown.get("acquisition", "")),
        "summary": _summary(spec, plan, timings),
        "definitions": definitions(spec, results.definitions, _poolings(results.probes, spec.pooling)),
        "notes": "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>",
        "curves": shown.get("curves", ""),
        "transfer": shown.get("transfer", ""),
        "layers": shown.get("layers", ""),
        "best": _best(results, languages),
        "emergence": (_rows_or_link(emergence_display(results.emergence), "emergence")
                      if not results.emergence.empty else "<p>No curves.</p>"),
        "tables": "".join(f"<h3>{esc(title)}</h3>{_rows_or_link(df, name)}"
                          for name, (title, df) in results.titled_tables().items()),
        "spec": f"<pre>{esc(spec.model_dump_json(indent=1))}</pre>",
    }
    sections = "\n".join(f'<section id="{k}"><h2>{TITLES.get(k, k.capitalize())}</h2>{body[k] or "<p>None.</p>"}'
                         "</section>" for k in SECTIONS)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>xlp: {esc(spec.name)}</title>'
            f"<style>{CSS}</style></head><body><h1>xlp run: {esc(spec.name)}</h1>\n"
            '<p><a href="explore.html">Explore the run</a>: any task, layer, languages and source, interactively.</p>'
            f"\n{sections}\n</body></html>\n")
