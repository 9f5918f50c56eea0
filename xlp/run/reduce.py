"""The reducer: gather every probe unit's rows, reduce them to results (xlp.analysis.reduce), write the results
tables and the report."""

from __future__ import annotations

import json
from collections.abc import Callable

import pandas as pd
import pyarrow as pa

from xlp.analysis import code_digest
from xlp.analysis.results import Results
from xlp.errors import XlpError
from xlp.report import write_report
from xlp.run.ledger import Ledger
from xlp.run.manifest import Manifest
from xlp.run.parallel import parallel_reduce, ray_map
from xlp.run.status import busy_seconds
from xlp.run.units import digest, probe_output
from xlp.storage import Store
from xlp.tasks.base import PER_ITEM_COLUMNS

REDUCED = "results/_reduced.json"
PROBE_ORDER = ["step", "task", "layer", "src_lang", "tgt_lang", "seed"]


def _write(store: Store, name: str, df: pd.DataFrame) -> None:
    store.write_table(f"results/{name}.parquet", pa.Table.from_pandas(df, preserve_index=False))
    store.write_csv(f"results/{name}.csv", df.drop(columns=list(PER_ITEM_COLUMNS), errors="ignore"))


def _timings(ledger: Ledger, plan: dict) -> dict[str, str]:
    """Per stage: units done, worker seconds, rows, and the wall-clock time in which any of them ran
    (the same busy time as `xlp status`: gaps between launches do not count)."""
    out = {}
    for stage, units in plan["units"].items():
        recs = [r for k, r in ledger.records(stage).items() if k in units and "seconds" in r]
        if recs:
            out[stage] = (f"{len(recs)} units, {sum(r['seconds'] for r in recs):,.1f} s of worker time, "
                          f"{sum(r.get('rows', 0) for r in recs):,} rows, {busy_seconds(recs):,.1f} s busy")
    return out


def no_subword_notes(ledger: Ledger, plan: dict) -> list[str]:
    """What the run's units read as the unknown token for want of a subword (their ledger records say), one
    note per language and split (or sentence task), with the largest count over the checkpoints."""
    seen: dict[tuple[str, str, str], list[int]] = {}
    for stage, units in plan["units"].items():
        for key, rec in ledger.records(stage).items():
            if key in units:
                where = " ".join(part.split("=", 1)[1] for part in key.split("/")[1:] if not part.startswith("layers="))
                for what, token, n in rec.get("no_subword", ()):
                    seen.setdefault((where, what, token), []).append(n)
    return [f"{where}: {max(ns)} {what if max(ns) > 1 else what[:-1]} had no subword and "
            f"{'were' if max(ns) > 1 else 'was'} read as {token}"
            + (f" (at {len(ns)} checkpoints)" if len(ns) > 1 else "")
            for (where, what, token), ns in sorted(seen.items())]


def reduce_run(store: Store, run: Manifest, plan: dict, force: bool = False, ledger: Ledger | None = None,
               on_step: Callable[[int, int], None] | None = None) -> bool:
    """Reduce the probe outputs that the run's plan (as in RUN/plan.json) names, write the results tables and
    the report; unless forced, skip it (False) when nothing they depend on changed since the last reduction.
    `on_step(advance, total)` reports progress."""
    tick = on_step or (lambda n, total: None)
    spec = run.spec
    ledger = ledger or Ledger(store)  # an output left by an older plan (another hash) is not a result
    outputs = [probe_output(key) for key, h in plan["units"]["probe"].items()
               if ledger.is_done("probe", key, h)]
    present = store.files("probes")
    # what the results are a function of: a relaunch with nothing new leaves them untouched
    inputs = digest({"plan": plan, "analysis": spec.analysis.model_dump(), "code": code_digest(), "name": spec.name,
                     "outputs": {o: present.get(o) for o in outputs}})
    if not force and store.exists(REDUCED) and json.loads(store.read_bytes(REDUCED)).get("inputs") == inputs:
        tick(1, 1)
        return False
    total = len(outputs) + 2  # read each output, then the analysis, then tables and report
    tables = []
    for o in outputs:
        if o in present:
            tables.append(store.read_table(o))
        tick(1, total)
    if tables:
        probes = pa.concat_tables(tables, promote_options="default").to_pandas()
    else:
        probes = pd.DataFrame(columns=PROBE_ORDER)
    probes = probes.sort_values(PROBE_ORDER, kind="stable").reset_index(drop=True)
    copies = [probes[probes.step == orig].assign(step=int(dup)) for dup, orig in plan.get("duplicates", {}).items()]
    if len(probes) and copies:  # an identical checkpoint's rows are its twin's, under its own step
        probes = pd.concat([probes, *copies], ignore_index=True).sort_values(PROBE_ORDER, kind="stable")
        probes = probes.reset_index(drop=True)
    if len(probes) and plan.get("checkpoints"):  # a series that moved keeps its results, under its new name
        probes["checkpoint"] = probes.step.astype(str).map(plan["checkpoints"]).fillna(probes.checkpoint)
    results = parallel_reduce(probes, spec.analysis, run.tasks.configured())  # Ray tasks when Ray is up
    tick(1, total)
    for name, table in results.tables().items():
        _write(store, name, table)
    notes = plan.get("notes", []) + no_subword_notes(ledger, plan)
    write_report(store, results, spec, {**plan, "notes": notes}, timings=_timings(ledger, plan), map_plots=ray_map)
    store.write_bytes(REDUCED, json.dumps({"inputs": inputs}).encode())
    tick(1, total)
    return True


def read_results(store: Store, run: Manifest) -> Results:
    """A reduced run's Results, read back from its results tables (nothing is recomputed)."""
    tables = {}
    for name in ("probes", "emergence", "findings", "layers"):
        if not store.exists(f"results/{name}.parquet"):
            raise XlpError(f"{store.path(f'results/{name}.parquet')}: missing; `xlp report` rebuilds it")
        tables[name] = pd.read_parquet(store.path(f"results/{name}.parquet"), filesystem=store.fs)
    tasks = run.tasks.configured()
    extra = {}
    for task in tasks.values():  # a task's own tables, under the titles it gives them
        for file, (title, _) in task.extra_tables(tables["probes"]).items():
            if store.exists(f"results/{file}.parquet"):
                extra[file] = (title, pd.read_parquet(store.path(f"results/{file}.parquet"), filesystem=store.fs))
    return Results.of(tables, extra, tasks)


def render_report(store: Store, run: Manifest, plan: dict) -> None:
    """The report again from the results tables as they are (`xlp report` on a run whose results are current)."""
    write_report(store, read_results(store, run), run.spec, plan, timings=_timings(Ledger(store), plan),
                 map_plots=ray_map)
