"""Run progress from the ledger and plan alone, so it works from any machine that sees the run."""

from __future__ import annotations

import json

from xlp.errors import XlpError
from xlp.orchestrator.ledger import STAGES, Ledger
from xlp.storage import Store


def run_status(run: str) -> dict:
    store = Store(run)
    try:
        plan = json.loads(store.read_bytes("plan.json"))
    except (OSError, FileNotFoundError):
        raise XlpError(f"{run}: no plan.json; this folder has not been launched (xlp launch SPEC)") from None
    ledger = Ledger(store)
    stages = {}
    for stage in STAGES:
        units = plan["units"][stage]
        done = [k for k, h in units.items() if ledger.is_done(stage, k, h)]
        failed = {k: r["error"] for k, r in ledger.failures(stage).items() if k in units and k not in done}
        recs = [ledger.records(stage)[k] for k in done]
        seconds = sum(r.get("seconds", 0) for r in recs)
        rows = sum(r.get("rows", 0) for r in recs)
        pending = len(units) - len(done) - len(failed)
        per_unit = seconds / len(recs) if recs else None
        stages[stage] = {
            "total": len(units), "done": len(done), "pending": pending, "failed": len(failed),
            "rows_per_s": round(rows / seconds, 1) if seconds else 0,
            "eta_s": round(per_unit * (pending + len(failed))) if per_unit is not None else None,
            "errors": failed,
        }
    results = store.exists("results/probes.parquet")
    return {"run": run, "summary": plan["summary"], "stages": stages, "results": results}
