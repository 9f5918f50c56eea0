"""Runs read back for `xlp compare`: each run's emergence table and the manifest it was launched with."""

from __future__ import annotations

import pandas as pd

from xlp.analysis.compare import PER_RUN
from xlp.analysis.curve_table import CURVE_KEYS
from xlp.config import Spec
from xlp.errors import XlpError
from xlp.run.manifest import run_manifest
from xlp.storage import Store


def load_runs(runs: list[str]) -> tuple[pd.DataFrame, list[Spec]]:
    """Every run's emergence table, one row per (run, curve), with the run's probe kind, and each run's spec (as
    the run saved it); a run is named by its spec's name (or its location where two share a name)."""
    if len(runs) < 2:
        raise XlpError("compare: give two runs or more")
    tables, names, specs = [], [], []
    for run in runs:
        store = Store(run)
        if not store.exists("results/emergence.parquet"):
            raise XlpError(f"{run}: no results/emergence.parquet; launch it (or `xlp report {run}`) first")
        em = pd.read_parquet(store.path("results/emergence.parquet"), filesystem=store.fs)
        specs.append(run_manifest(store).spec)
        name = specs[-1].name
        names.append(name if name not in names else run)
        tables.append(em[CURVE_KEYS + ["metric"] + [c for c in PER_RUN if c in em]].assign(
            run=names[-1], probe_kind=specs[-1].probe.kind))
    return pd.concat(tables, ignore_index=True), specs
