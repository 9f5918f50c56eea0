"""The reducer: gather every probe unit's rows into results tables, curves' statistics, a report."""

from __future__ import annotations

import html
import json

import pandas as pd
import pyarrow as pa

from xlp.orchestrator.analysis import emergence_table
from xlp.spec import Spec
from xlp.storage import Store

PROBE_ORDER = ["step", "task", "layer", "src_lang", "tgt_lang", "seed"]


def _write(store: Store, name: str, df: pd.DataFrame) -> None:
    store.write_table(f"results/{name}.parquet", pa.Table.from_pandas(df, preserve_index=False))
    store.write_csv(f"results/{name}.csv", df)


def reduce_run(store: Store, spec: Spec, outputs: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reduce the probe outputs the plan names (default: the plan stored in RUN/plan.json)."""
    plan = json.loads(store.read_bytes("plan.json"))
    if outputs is None:
        outputs = [f"probes/{key}/part-0.parquet" for key in plan["units"]["probe"]]
    present = store.files("probes")
    tables = [store.read_table(o) for o in outputs if o in present]
    probes = pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame(columns=PROBE_ORDER)
    probes = probes.sort_values(PROBE_ORDER, kind="stable").reset_index(drop=True)
    emergence = emergence_table(probes, spec.analysis.emergence_threshold)
    _write(store, "probes", probes)
    _write(store, "emergence", emergence)
    store.write_bytes("report/index.html", _report_html(spec, plan, probes, emergence).encode())
    return probes, emergence


def _report_html(spec: Spec, plan: dict, probes: pd.DataFrame, emergence: pd.DataFrame) -> str:
    theta = spec.analysis.emergence_threshold
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in plan.get("notes", []))
    s = plan["summary"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>xlp: {html.escape(spec.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}</style></head><body>
<h1>xlp run: {html.escape(spec.name)}</h1>
<p>{s["checkpoints"]} checkpoints (steps {', '.join(map(str, s["steps"]))}),
tasks {', '.join(spec.tasks)}, layers {s["layers"]}, sources {s["sources"]}, targets {s["targets"]}.</p>
<h2>Definitions</h2><ul>
<li>Curve: metric against pretraining step for one (task, layer, source, target), averaged over probe seeds.</li>
<li>Emergence step: the first checkpoint reaching {theta} of the curve's best value; the normalised
variant uses (value &minus; first) / (best &minus; first) &ge; {theta}.</li>
<li>Best checkpoint: argmax of the curve, earliest on ties. final_minus_best = final &minus; best.</li>
<li>Probes: L2-regularised multinomial logistic regression (l2={spec.probe.l2}) on frozen {spec.pooling}-subword
word vectors; a probe fit on all of a source's training words is the same for every seed, so it is fit once.</li>
</ul><h2>Notes</h2><ul>{notes}</ul>
<h2>Emergence</h2>{emergence.to_html(index=False, float_format=lambda v: f"{v:.4f}")}
</body></html>"""
