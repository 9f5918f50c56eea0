"""Run progress from the files in the run folder alone (plan, ledger, the driver's lock and its list of
units in flight), so it works from any machine that sees the output, also after the cluster is gone."""

from __future__ import annotations

import json
import socket
import time
from collections import defaultdict

from xlp.errors import XlpError
from xlp.run.ledger import STAGES, Ledger
from xlp.run.lock import LOCK, _alive
from xlp.storage import Store

INFLIGHT = "status/inflight.json"  # written by the driver as units start and finish


class NotLaunched(XlpError):
    """The folder has no plan.json: no driver has started on it yet (or it failed before planning)."""


def _read_json(store: Store, rel: str) -> dict | None:
    try:
        return json.loads(store.read_bytes(rel))
    except (OSError, FileNotFoundError, ValueError):
        return None


def driver_state(store: Store) -> dict:
    """Whether a driver runs this folder now: its lock, and (on this host) whether its process lives."""
    lock = _read_json(store, LOCK)
    if lock is None:
        return {"running": False, "detail": "no driver"}
    where = f"pid {lock.get('pid')} on {lock.get('host')}"
    if lock.get("host") == socket.gethostname() and not _alive(int(lock.get("pid", -1))):
        return {"running": False, "detail": f"driver {where} is gone (stale lock; a relaunch takes it over)"}
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lock.get("since", 0)))
    return {"running": True, "detail": f"driver {where}, since {since}"}


def busy_seconds(records: list[dict]) -> float:
    """Wall-clock seconds during which at least one of these units ran (the union of their intervals):
    throughput over it counts every worker of the cluster and skips the gaps between launches."""
    spans = sorted((r["finished"] - r.get("seconds", 0), r["finished"]) for r in records if "finished" in r)
    total, end = 0.0, float("-inf")
    for a, b in spans:
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def run_status(run: str) -> dict:
    store = Store(run)
    plan = _read_json(store, "plan.json")
    if plan is None:
        raise NotLaunched(f"{run}: no plan.json; this folder has not been launched (xlp launch SPEC)")
    ledger = Ledger(store)
    driver = driver_state(store)
    inflight = (_read_json(store, INFLIGHT) or {}).get("units", {}) if driver["running"] else {}
    stages, nodes = {}, defaultdict(lambda: {"units": 0, "rows": 0, "seconds": 0.0})
    for stage in STAGES:
        units = plan["units"][stage]
        done = [k for k, h in units.items() if ledger.is_done(stage, k, h)]
        failed = {k: r["error"] for k, r in ledger.failures(stage).items() if k in units and k not in done}
        running = [k for k in inflight.get(stage, []) if k in units and k not in done]
        recs = [ledger.records(stage)[k] for k in done]
        for r in recs:
            node = nodes[(r.get("node") or "?", (r.get("ray_node") or "")[:12], stage)]
            node["units"] += 1
            node["rows"] += r.get("rows", 0)
            node["seconds"] += r.get("seconds", 0)
        busy = busy_seconds(recs)
        rows = sum(r.get("rows", 0) for r in recs)
        pending = len(units) - len(done) - len(failed) - len(running)
        per_unit = busy / len(recs) if busy else None
        stages[stage] = {
            "total": len(units), "done": len(done), "running": len(running), "pending": pending,
            "failed": len(failed), "rows_per_s": round(rows / busy, 1) if busy else 0,
            "eta_s": round(per_unit * (pending + len(running) + len(failed))) if per_unit is not None else None,
            "errors": failed, "running_units": running,
        }
    results = store.exists("results/probes.parquet")
    node_rows = [{"node": n, "ray_node": r, "stage": s, **v} for (n, r, s), v in sorted(nodes.items())]
    return {"run": run, "driver": driver, "summary": plan["summary"], "stages": stages, "nodes": node_rows,
            "results": results}
