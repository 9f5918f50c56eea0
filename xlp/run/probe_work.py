"""A probe unit's work: fit its probes on the source's training shard, then score them on every target's test
shard. The two run as one task when every shard exists, or as two (the fit as soon as its training shard is
written, the scoring once the targets' are), so that probes fit while extraction goes on. torch and the probes are
imported where they run (xlp.run.work says why); `warmed_up` imports them ahead."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa

from xlp.errors import ShardChecksumError, XlpError
from xlp.run.recent import recent_table
from xlp.run.resources import EARLY_FIT_ROWS, fit_threads
from xlp.run.units import ProbeUnit
from xlp.run.work import WorkContext, write_rows
from xlp.storage import Store
from xlp.storage.features import capped_sentences, layer_column, resample_sentences, shard_path
from xlp.storage.store import ChecksumMismatch
from xlp.tasks.base import FeatureTask, OwnProbeTask, result_row
from xlp.tasks.mdl import CompressionTask


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


WARMED: list[float] = []  # when this worker process was warmed for probe tasks (xlp.run.warm), if it was


@dataclass
class FittedProbes:
    """A probe unit's fitted probes, before they are scored: what a fit task hands the unit's scoring task
    when the fit starts before the targets' shards exist."""
    tasks: tuple[FeatureTask, ...]  # the unit's tasks as trained (control tasks know the labels' distribution)
    probes: dict  # seed -> probes
    n_train: dict  # seed -> training items
    invariant: bool  # no seed changes the fit
    rows: list[dict]  # rows written before any target's (MDL's online code)
    started: float  # when the fit started (epoch seconds)
    seconds: float  # the fit's time
    threads: tuple[int, int] | None = None  # the most and fewest torch threads of its steps, where it shared idle CPUs
    warmed: float | None = field(default_factory=lambda: WARMED[0] if WARMED else None)  # when its worker was warmed


def warmed_up() -> None:
    """Import what probe tasks and the reducer's tasks run: torch, the probes, pandas, scipy's statistics and
    matplotlib; note when (xlp.run.warm)."""
    import matplotlib.figure  # noqa: F401
    import pandas  # noqa: F401
    import scipy.stats  # noqa: F401

    import xlp.models.loading  # noqa: F401
    import xlp.probing.linear  # noqa: F401
    import xlp.probing.mdl  # noqa: F401
    import xlp.probing.mlp  # noqa: F401

    WARMED.append(time.time())


def run_probe(ctx: WorkContext, unit: ProbeUnit, digests: dict[str, str] | None = None) -> dict:
    """Fit the unit's probes and score them on every target (`fit_probe_unit`, `score_probe_unit`)."""
    return score_probe_unit(ctx, unit, fit_probe_unit(ctx, unit, digests), digests)


def fit_probe_unit(ctx: WorkContext, unit: ProbeUnit, digests: dict[str, str] | None = None) -> FittedProbes:
    """Fit the source's probes for every layer of the unit, per seed (once when the seed can change
    neither the examples nor the fit), for the first of the unit's tasks (its probe serves the others:
    arc and arc_uas share one fit). It reads the training shard alone, checked against `digests` (shard
    path -> SHA-256, the ledger's)."""
    from xlp.models.loading import pick_device

    start = time.time()
    device = pick_device(None) if ctx.probe_on_gpu else None  # None: the CPU
    ctx.faults.inject(unit.key)
    store = ctx.store()
    tasks = unit.configured_tasks()
    table, cols = _read(store, _columns(tasks), unit.ckpt.step, unit.src, unit.train_split, unit.layers, digests or {})
    if ctx.fit_cpus and device is None and table.num_rows >= EARLY_FIT_ROWS:  # a tiny fit: not worth a look at Ray
        with fit_threads(ctx.fit_cpus) as used:
            fitted = _fit(unit, tasks, table, cols, device, start)
        return replace(fitted, threads=(max(used), min(used)) if used else None)
    return _fit(unit, tasks, table, cols, device, start)


def _fit(unit: ProbeUnit, tasks: tuple, table: pa.Table, cols: list[str], device, start: float) -> FittedProbes:
    from xlp.probing.linear import fit_probes
    from xlp.probing.mdl import MlpShape, online_code
    from xlp.probing.mlp import fit_mlp_probes

    settings = unit.probe
    resample = settings.resample == "bootstrap"
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
    return FittedProbes(tasks, probes, n_train, invariant, rows, start, time.time() - start)


def score_probe_unit(ctx: WorkContext, unit: ProbeUnit, fitted: FittedProbes,
                     digests: dict[str, str] | None = None) -> dict:
    """Score the fitted probes on every target's test examples, for each of the unit's tasks, and write the
    unit's rows; each shard read is checked against `digests`. The ledger's `seconds` is the fit's and this,
    `fit_started` when the fit started."""
    start = time.time() - fitted.seconds
    store, needs = ctx.store(), _columns(fitted.tasks)
    rows = list(fitted.rows)
    for tgt, split in unit.targets:
        test, cols = _read(store, needs, unit.ckpt.step, tgt, split, unit.layers, digests or {},
                           recent=len(unit.targets))
        for task in fitted.tasks:
            rows += _score(unit, task, fitted.probes, fitted.n_train, fitted.invariant, tgt, test, cols)
    if not rows:
        raise XlpError(f"probe {unit.key}: no targets")
    threads = {"fit_threads": fitted.threads[0], "fit_threads_least": fitted.threads[1]} if fitted.threads else {}
    warmed = {"worker_warmed": fitted.warmed} if fitted.warmed is not None else {}  # the fit's worker's
    return {**write_rows(store, unit, rows, start), "fit_started": fitted.started, **threads, **warmed}


def _columns(tasks: tuple[FeatureTask, ...]) -> tuple[str, ...]:
    """The label columns the tasks read, and each item's sentence (test items' unit of resampling)."""
    return tuple(dict.fromkeys([c for task in tasks for c in task.needs] + ["sent_idx"]))


def _score(unit: ProbeUnit, task: FeatureTask, probes: dict, n_train: dict, invariant: bool, tgt: str,
           test: pa.Table, cols: list[str]) -> list[dict]:
    """One task's rows on one target: every seed's probe scored on the target's test examples."""
    from xlp.probing.linear import majority_accuracy

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
