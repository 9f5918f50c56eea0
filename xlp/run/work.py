"""What one unit does, independent of where it runs (a Ray actor, a Ray task, or a test). Every worker
takes one `WorkContext` (where the run's files are, how to run, the tests' injected faults) and a unit."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from xlp.errors import ShardChecksumError, XlpError
from xlp.models.extract import FeatureExtractor
from xlp.models.loading import pick_device
from xlp.models.words import NO_SUBWORD
from xlp.probing.linear import fit_probes, majority_accuracy
from xlp.probing.mdl import MlpShape, online_code
from xlp.probing.mlp import fit_mlp_probes
from xlp.run.recent import recent_split, recent_table
from xlp.run.units import ExtractUnit, ProbeUnit, SentenceUnit
from xlp.storage import Store
from xlp.storage.features import (
    PARQUET_OPTIONS,
    capped_sentences,
    features_table,
    layer_column,
    resample_sentences,
    shard_path,
)
from xlp.storage.store import ChecksumMismatch, Written
from xlp.tasks.base import FeatureTask, OwnProbeTask, Runtime, result_row
from xlp.tasks.mdl import CompressionTask


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


def _write_rows(store: Store, unit: ProbeUnit | SentenceUnit, rows: list[dict], start: float) -> dict:
    return _written(store.write_table(unit.output, pa.Table.from_pylist(rows)), len(rows), start)


class ExtractionWorker:
    """Holds one loaded checkpoint at a time and writes feature shards. It runs two units at once (the actor's
    max_concurrency): one on the model while the other's shard is encoded and written, so the model never waits
    for Parquet (each word is 2 bytes x size x layers of features: 20 KB at XLM-R base size)."""

    def __init__(self, ctx: WorkContext):
        self.ctx, self.store, self.runtime = ctx, ctx.store(), ctx.runtime
        self.extractor: FeatureExtractor | None = None
        self.model_lock = threading.Lock()  # one unit on the model (and torch's threads) at a time

    def node(self) -> str | None:
        """The Ray node this actor runs on (whose idle CPUs it may use)."""
        return _ray_node()

    def run(self, unit: ExtractUnit, threads: int | None = None) -> dict:
        """Extract the unit's shard, with `threads` torch threads (default: as many as Ray's CPUs for it)."""
        self.ctx.faults.inject(unit.key)
        with self.model_lock:
            start = time.time()  # not the wait for the unit before it
            if threads is not None:
                torch.set_num_threads(threads)
            e = self.extractor
            if e is None or e.ckpt != unit.ckpt or e.layers != list(unit.layers) or e.pooling != unit.pooling:
                self.extractor = None  # free the previous checkpoint before loading the next
                r = self.runtime
                self.extractor = FeatureExtractor(unit.ckpt, list(unit.layers), unit.pooling, r.batch_tokens,
                                                  r.device, r.trust_remote_code, r.allow_pickle)
            sentences = recent_split(unit.file, unit.max_sentences, unit.lenient, unit.part)
            before = NO_SUBWORD.copy()
            vecs = self.extractor.extract([s.forms for s in sentences], unit.dtype)
            facts = {"device": str(self.extractor.device), "threads": torch.get_num_threads(), "pid": os.getpid(),
                     **_no_subword(before)}
        table = features_table(sentences, vecs, unit.dtype)
        written = self.store.write_table(unit.output, table, **PARQUET_OPTIONS)
        return _written(written, table.num_rows, start, **facts)


def _read(store: Store, needs: tuple[str, ...], step: int, lang: str, split: str, layers: tuple[int, ...],
          digests: dict[str, str], recent: int = 0):
    """A shard's layer columns and the label columns `needs`, after checking its bytes against the
    digest the ledger recorded for it (`digests`: shard path -> SHA-256); with `recent` (how many shards the
    unit reads so), as this process read it for an earlier unit if the file has not changed since (test shards:
    every source reads them)."""
    path = shard_path(step, lang, split)
    cols = [layer_column(layer) for layer in layers]
    try:
        if recent:
            return recent_table(store, path, [*cols, *needs], digests.get(path), recent), cols
        return store.read_table(path, columns=[*cols, *needs], sha256=digests.get(path)), cols
    except ChecksumMismatch:
        raise ShardChecksumError(path) from None


def run_probe(ctx: WorkContext, unit: ProbeUnit, digests: dict[str, str] | None = None) -> dict:
    """Fit the source's probes for every layer of the unit, per seed (once when the seed can change
    neither the examples nor the fit), and score them on every target's test examples, for each of
    the unit's tasks (the first task's probe serves the others: arc and arc_uas share one fit). Each
    shard read is checked against `digests` (the ledger's, by unit key)."""
    start = time.time()
    device = pick_device(None) if ctx.probe_on_gpu else None  # None: the CPU
    ctx.faults.inject(unit.key)
    store = ctx.store()
    digests = digests or {}
    tasks = unit.configured_tasks()
    step, settings = unit.ckpt.step, unit.probe
    resample = settings.resample == "bootstrap"
    needs = tuple(dict.fromkeys([c for task in tasks for c in task.needs] + ["sent_idx"]))  # test items' sentences
    table, cols = _read(store, needs, step, unit.src, unit.train_split, unit.layers, digests)
    tasks = tuple(task.trained_on(table) for task in tasks)  # control tasks: the training labels' distribution
    fit = tasks[0]
    cap = settings.max_train_words
    probes, n_train, invariant = {}, {}, False
    rows = []  # MDL's rows first: their extra columns are in the file's schema
    for seed in settings.seeds:
        if invariant:
            probes[seed], n_train[seed] = probes[settings.seeds[0]], n_train[settings.seeds[0]]
            rows += [{**row, "seed": seed} for row in rows if row["seed"] == settings.seeds[0]]
            continue
        train = resample_sentences(table, np.random.default_rng([seed, 1])) if resample else table
        if isinstance(fit, OwnProbeTask):  # a task that fits its own probe (structural probes): from a fixed start
            if cap is not None and train.num_rows > cap:  # its items are sentences: whole ones up to the cap
                train = capped_sentences(train, cap, np.random.default_rng(seed))
            probes[seed], n_train[seed] = fit.fit(train, cols, settings, device)
            invariant = not resample and (cap is None or table.num_rows <= cap)
            continue
        X, y = fit.examples(train, cols, seed)
        # an MLP is not convex: each seed fits from its own start (xlp/probing/mlp.py)
        invariant = settings.kind == "linear" and not fit.seeded and not resample and (cap is None or len(y) <= cap)
        idx = slice(None)
        if cap is not None and len(y) > cap:
            idx = np.sort(np.random.default_rng(seed).choice(len(y), cap, replace=False))
            X, y = X[:, idx], y[idx]
        if settings.mdl:  # the online code of the same training examples, by the probe the unit fits
            shape = MlpShape(settings.hidden, settings.dropout, seed) if settings.kind == "mlp" else None
            code = online_code(X, y, settings.l2, settings.max_iter, settings.tol, device=device, mlp=shape)
            rows += CompressionTask(fit).rows(unit, seed, code, fit.item_sentences(train)[idx], invariant)
        if settings.kind == "mlp":
            probes[seed] = fit_mlp_probes(X, y, settings.l2, settings.max_iter, settings.tol, settings.hidden,
                                          settings.dropout, seed, device)
        else:
            warm = next(iter(probes.values()), None)  # the first seed's optimum: a start closer to this one's
            probes[seed] = fit_probes(X, y, settings.l2, settings.max_iter, settings.tol, init=warm, device=device)
        n_train[seed] = len(y)
    del table
    for tgt, split in unit.targets:
        test, cols = _read(store, needs, step, tgt, split, unit.layers, digests, recent=len(unit.targets))
        for task in tasks:
            rows += _score(unit, task, probes, n_train, invariant, tgt, test, cols)
    if not rows:
        raise XlpError(f"probe {unit.key}: no targets")
    return _write_rows(store, unit, rows, start)


def _score(unit: ProbeUnit, task: FeatureTask, probes: dict, n_train: dict, invariant: bool, tgt: str,
           test: pa.Table, cols: list[str]) -> list[dict]:
    """One task's rows on one target: every seed's probe scored on the target's test examples."""
    evaluate = getattr(task, "evaluate", None)  # a task that scores its own way (head selection, structural)
    if evaluate is None:
        Xt, yt = task.examples(test, cols, 0)  # one fixed test set for every seed and checkpoint
        baseline = majority_accuracy(yt)
    else:
        baseline = task.test_baseline(test)
    scores: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    sentences = task.item_sentences(test)  # the unit the reducer resamples: a test item's sentence
    rows = []
    for seed, probe in probes.items():
        if id(probe) not in scores:
            scores[id(probe)] = evaluate(probe, test, cols) if evaluate else probe.score(Xt, yt, task.metric)
        # per item: 0/1 (L, n), or (L, k, n) columns whose sums give the value; a task may add columns per layer
        values, items, *extra = scores[id(probe)]
        sums = items.ndim == 3
        for li, layer in enumerate(unit.layers):
            rows.append({**result_row(unit, task=task.name, layer=layer, src=unit.src, tgt=tgt, seed=seed,
                                      metric=task.metric, value=values[li], baseline=baseline, n_train=n_train[seed],
                                      n_test=items.shape[-1], invariant=invariant,
                                      correct=None if sums else items[li], item_sums=items[li] if sums else None,
                                      pooling=unit.pooling, fit=(probe, li),
                                      item_groups=sentences if len(sentences) == items.shape[-1] else None),
                         **(extra[0][li] if extra else {})})
    return rows


def run_sentence_unit(ctx: WorkContext, unit: SentenceUnit, digests: dict[str, str] | None = None) -> dict:
    """A sentence task's unit: its rows, in the probe outputs' layout, written like a probe's."""
    start, before = time.time(), NO_SUBWORD.copy()
    ctx.faults.inject(unit.key)
    rows = unit.sentence_task.rows(unit, ctx.runtime)
    return {**_write_rows(ctx.store(), unit, rows, start), **_no_subword(before)}


def _no_subword(before: Counter) -> dict:
    """For the ledger record: the words (or texts) the unit read as the unknown token for want of a subword,
    as [words or texts, token, count] (nothing when there were none, as on ordinary data)."""
    added = NO_SUBWORD - before
    return {"no_subword": [[what, token, n] for (what, token), n in sorted(added.items())]} if added else {}
