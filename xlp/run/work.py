"""What one unit does, independent of where it runs (a Ray actor, a Ray task, or a test). Every worker
takes one `WorkContext` (where the run's files are, how to run, the tests' injected faults) and a unit.

torch and the models are imported where a unit runs them: the driver imports this module (and probe_work) only to
hand its workers to Ray, and their import (1.2 s) would stand between Ray's start and the extractor's."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

from xlp.models.words import NO_SUBWORD
from xlp.run.recent import recent_split
from xlp.run.resources import IdleCpus, ThreadShare
from xlp.run.units import ExtractUnit, ProbeUnit, SentenceUnit
from xlp.storage import Store
from xlp.storage.features import PARQUET_OPTIONS, features_table
from xlp.storage.store import Written
from xlp.tasks.base import Runtime

if TYPE_CHECKING:
    from xlp.models.extract import FeatureExtractor


@dataclass(frozen=True)
class Faults:
    """Tests break a chosen unit deterministically, from the driver's environment (the driver passes
    it along, so long-lived Ray workers need not see it): XLP_FAIL_UNIT=<substring of a unit key>
    raises in it; XLP_DIE_IN_UNIT=<substring> kills the worker process running it (as the OOM killer
    would), once: XLP_DIE_MARKER names a file created on the way down; XLP_HOLD_IN_UNIT=<substring>
    holds it, once, after writing its Ray node id and pid to XLP_HOLD_MARKER, until the test deletes
    that file (at most two minutes), so that the test can take the node down while the unit runs there;
    XLP_FAIL_WRITE=<substring of a path> makes writes there fail with ENOSPC."""
    unit: str | None = None
    write: str | None = None
    die: str | None = None
    die_marker: str | None = None
    hold: str | None = None
    hold_marker: str | None = None

    @classmethod
    def from_env(cls) -> Faults:
        env = os.environ.get
        return cls(unit=env("XLP_FAIL_UNIT"), write=env("XLP_FAIL_WRITE"), die=env("XLP_DIE_IN_UNIT"),
                   die_marker=env("XLP_DIE_MARKER"), hold=env("XLP_HOLD_IN_UNIT"), hold_marker=env("XLP_HOLD_MARKER"))

    def inject(self, key: str) -> None:
        if self.unit and self.unit in key:
            raise RuntimeError(f"injected failure in {key} (XLP_FAIL_UNIT)")
        if self.die and self.die in key and _first_time(self.die_marker):
            os._exit(137)
        hold = self.hold_marker
        if self.hold and self.hold in key and _first_time(hold, f"{_ray_node()} {os.getpid()}"):
            deadline = time.time() + 120
            while os.path.exists(hold) and time.time() < deadline:
                time.sleep(0.1)


@dataclass(frozen=True)
class WorkContext:
    """What every worker gets besides its unit: the run folder, how to run (never what to compute: none of
    it is hashed), and the faults tests inject."""
    output: str
    runtime: Runtime = field(default_factory=Runtime)
    faults: Faults = field(default_factory=Faults)
    probe_on_gpu: bool = False  # cluster.gpus_per_probe > 0: fit on the GPU Ray assigns, if the worker sees one
    fit_cpus: int = 0  # a big fit's own CPUs, to which it adds its share of its node's idle ones; 0: it does not

    def store(self) -> Store:
        return Store(self.output, fail_write=self.faults.write)


def _first_time(marker: str | None, content: str = "") -> bool:
    """Create the marker file; False if it exists already (the unit's retry runs normally). The
    `.tmp` twin, created exclusively and kept, says "done once"; the marker appears whole (a hard link)."""
    if not marker:
        return False
    try:
        fd = os.open(marker + ".tmp", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, content.encode())
    os.close(fd)
    try:
        os.link(marker + ".tmp", marker)  # appears whole, with its content
    except FileExistsError:
        return False
    return True


def _ray_node() -> str | None:
    try:
        import ray
    except ImportError:  # a worker run outside Ray, on a machine without it (benchmarks/gpu.py)
        return None
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def _written(written: Written, rows: int, start: float, **extra) -> dict:
    """What the ledger records of a finished unit: its output's size and digest, and where and how long."""
    return {"bytes": written.bytes, "sha256": written.sha256, "rows": rows, "seconds": time.time() - start,
            "node": socket.gethostname(), "ray_node": _ray_node(), **extra}


def write_rows(store: Store, unit: ProbeUnit | SentenceUnit, rows: list[dict], start: float) -> dict:
    return _written(store.write_table(unit.output, pa.Table.from_pylist(rows)), len(rows), start)


TURN_WAIT = 2.0  # seconds a unit waits for the units sent before it to take the model


class ExtractionWorker:
    """Holds one loaded checkpoint at a time and writes feature shards. It runs two units at once (the actor's
    max_concurrency): one on the model while the other's shard is encoded and written, so the model never waits
    for Parquet (each word is 2 bytes x size x layers of features: 20 KB at XLM-R base size)."""

    def __init__(self, ctx: WorkContext):
        self.ctx, self.store, self.runtime = ctx, ctx.store(), ctx.runtime
        self.extractor: FeatureExtractor | None = None
        self.model_lock = threading.Lock()  # one unit on the model (and torch's threads) at a time
        self.turns = threading.Condition()  # the units take the model in the order the driver sent them
        self.next_turn = 0
        self.idle = IdleCpus()  # its node's idle CPUs, for an adaptive extractor's threads

    def node(self) -> str | None:
        """The Ray node this actor runs on (whose idle CPUs it may use)."""
        return _ray_node()

    def run(self, unit: ExtractUnit, share: ThreadShare | None = None, turn: int | None = None) -> dict:
        """Extract the unit's shard, each batch with the threads `share` allows then (default: as many as Ray's
        CPUs for the actor). `turn` counts the units sent to this actor: the two in its hands run on two threads,
        and the one sent first takes the model first (the driver sends the largest training shards first)."""
        with self.turns:  # after a restart, the turns before a retried unit's may never come: wait a little only
            self.turns.wait_for(lambda: turn is None or self.next_turn >= turn, timeout=TURN_WAIT)
        try:
            return self._run(unit, share, turn)
        finally:
            self._pass_turn(turn)  # also when the unit failed before it took the model

    def _pass_turn(self, turn: int | None) -> None:
        if turn is not None:
            with self.turns:
                self.next_turn = max(self.next_turn, turn + 1)
                self.turns.notify_all()

    def _run(self, unit: ExtractUnit, share: ThreadShare | None, turn: int | None) -> dict:
        import torch

        from xlp.models.extract import FeatureExtractor

        self.ctx.faults.inject(unit.key)
        with self.model_lock:
            self._pass_turn(turn)
            start = time.time()  # not the wait for the unit before it
            used = set()

            def set_threads() -> None:
                used.add(share.apply(self.idle) if share is not None else torch.get_num_threads())

            set_threads()
            e = self.extractor
            if e is None or e.ckpt != unit.ckpt or e.layers != list(unit.layers) or e.pooling != unit.pooling:
                self.extractor = None  # free the previous checkpoint before loading the next
                self.extractor = FeatureExtractor(unit.ckpt, list(unit.layers), unit.pooling,
                                                  **self.runtime.model_options())
            loaded = time.time()
            sentences = recent_split(unit.file, unit.max_sentences, unit.lenient, unit.part)
            before = NO_SUBWORD.copy()
            vecs = self.extractor.extract([s.forms for s in sentences], unit.dtype, before_batch=set_threads)
            facts = {"device": str(self.extractor.device), "precision": self.extractor.precision,
                     "threads": max(used), "threads_least": min(used), "load_seconds": loaded - start,
                     "model_seconds": time.time() - loaded, "pid": os.getpid(), **_no_subword(before)}
        table = features_table(sentences, vecs, unit.dtype)
        written = self.store.write_table(unit.output, table, **PARQUET_OPTIONS)
        return _written(written, table.num_rows, start, **facts)


def run_sentence_unit(ctx: WorkContext, unit: SentenceUnit, digests: dict[str, str] | None = None) -> dict:
    """A sentence task's unit: its rows, in the probe outputs' layout, written like a probe's."""
    start, before = time.time(), NO_SUBWORD.copy()
    ctx.faults.inject(unit.key)
    rows = unit.sentence_task.rows(unit, ctx.runtime)
    return {**write_rows(ctx.store(), unit, rows, start), **_no_subword(before)}


def _no_subword(before: Counter) -> dict:
    """For the ledger record: the words (or texts) the unit read as the unknown token for want of a subword,
    as [words or texts, token, count] (nothing when there were none, as on ordinary data)."""
    added = NO_SUBWORD - before
    return {"no_subword": [[what, token, n] for (what, token), n in sorted(added.items())]} if added else {}
