"""The run's self-contained HTML report: pure renderers of a run's `Results` (figures.py: matplotlib figures as
bytes; drawing.py: which figures, drawn where; tables.py: results tables as shown; prose.py and page.py: the
HTML), and `write_report`, the one place that writes the report's files. Nothing here computes a number the
results tables do not hold."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from xlp.analysis.results import Results
from xlp.config import Spec
from xlp.report.drawing import draw_all
from xlp.report.explore import explore_page
from xlp.report.figures import language_style
from xlp.report.page import SECTIONS, page
from xlp.storage import Store

__all__ = ["SECTIONS", "write_report"]


def write_report(store: Store, results: Results, spec: Spec, plan: dict,
                 timings: Mapping[str, str] | None = None, map_plots: Callable | None = None) -> None:
    """Write report/index.html (figures inline), report/figures/<kind>_<task>.{png,svg} and report/explore.html
    (the interactive page) to the store; `map_plots` draws the figures (`draw_all`)."""
    style = language_style(spec.data.languages, results.probes)
    figures, skipped = draw_all(results, style, map_plots)
    for drawn in (f for fs in figures.values() for f in fs):
        store.write_bytes(f"report/figures/{drawn.name}.png", drawn.png)
        store.write_bytes(f"report/figures/{drawn.name}.svg", drawn.svg)
    notes = [*plan.get("notes", []), *results.notes, *skipped]
    html = page(results, spec, plan, timings or {}, figures, notes, list(style))
    store.write_bytes("report/index.html", html.encode())
    store.write_bytes("report/explore.html", explore_page(results, spec.name, list(style),
                                                          list(results.tables())).encode())
