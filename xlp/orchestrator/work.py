"""What one unit does, independent of where it runs (a Ray actor, a Ray task, or a test)."""

from __future__ import annotations

import socket
import time

import numpy as np
import pyarrow as pa

from xlp.errors import XlpError
from xlp.models.extract import WordFeatureExtractor
from xlp.orchestrator.plan import ExtractUnit, ProbeUnit
from xlp.spec import Spec
from xlp.storage import Store
from xlp.storage.features import PARQUET_OPTIONS, features_table, layer_column, shard_path
from xlp.tasks import TASKS
from xlp.tasks.probe import fit_probe, majority_accuracy
from xlp.tasks.ud import read_conllu


def _fault_injection(key: str, target: str | None) -> None:
    """Tests crash a chosen unit deterministically: XLP_FAIL_UNIT=<substring of a unit key> in the
    driver's environment (the driver passes it along, so long-lived Ray workers need not see it)."""
    if target and target in key:
        raise RuntimeError(f"injected failure in {key} (XLP_FAIL_UNIT)")


class ExtractionWorker:
    """Holds one loaded checkpoint at a time and writes feature shards."""

    def __init__(self, spec: Spec, layers: list[int], device: str | None = None):
        self.spec, self.layers, self.device = spec, layers, device
        self.store = Store(spec.output)
        self.extractor: WordFeatureExtractor | None = None

    def run(self, unit: ExtractUnit, fail: str | None = None) -> dict:
        start = time.time()
        _fault_injection(unit.key, fail)
        if self.extractor is None or self.extractor.ckpt != unit.ckpt:
            self.extractor = None  # free the previous checkpoint before loading the next
            self.extractor = WordFeatureExtractor(
                unit.ckpt, self.layers, self.spec.pooling, self.spec.batch_tokens, self.device,
                self.spec.trust_remote_code, self.spec.allow_pickle)
        sentences = read_conllu(unit.file, unit.max_sentences)
        vecs = self.extractor.extract([s.forms for s in sentences])
        table = features_table(sentences, vecs, self.spec.feature_dtype)
        nbytes = self.store.write_table(unit.output, table, **PARQUET_OPTIONS)
        return {"bytes": nbytes, "rows": table.num_rows, "seconds": time.time() - start,
                "node": socket.gethostname(), "device": str(self.extractor.device)}


def _examples(store: Store, task, step: int, lang: str, split: str, layer: int):
    col = layer_column(layer)
    table = store.read_table(shard_path(step, lang, split), columns=[col, *task.needs])
    return task.examples(table, col)


def run_probe(spec: Spec, unit: ProbeUnit, fail: str | None = None) -> dict:
    """Fit the source's probe (one per seed, or once when seeds cannot change it) and score every target."""
    start = time.time()
    _fault_injection(unit.key, fail)
    store = Store(spec.output)
    task = TASKS[unit.task]
    step = unit.ckpt.step
    X, y = _examples(store, task, step, unit.src, unit.train_split, unit.layer)
    cap = spec.probe.max_train_words
    seed_invariant = cap is None or len(y) <= cap
    probes = {}
    for seed in spec.probe.seeds:
        if seed_invariant and probes:
            probes[seed] = next(iter(probes.values()))
            continue
        idx = np.arange(len(y)) if seed_invariant else np.sort(np.random.default_rng(seed).choice(len(y), cap, replace=False))
        probes[seed] = fit_probe(X[idx], y[idx], spec.probe.l2, spec.probe.max_iter)
    n_train = len(y) if seed_invariant else cap
    rows = []
    for tgt, split in unit.targets:
        Xt, yt = _examples(store, task, step, tgt, split, unit.layer)
        baseline = majority_accuracy(yt)
        scores = {}
        for seed, probe in probes.items():
            if id(probe) not in scores:
                scores[id(probe)] = probe.accuracy(Xt, yt)
            rows.append({"checkpoint": unit.ckpt.name, "step": step, "task": unit.task, "layer": unit.layer,
                         "src_lang": unit.src, "tgt_lang": tgt, "seed": seed, "metric": task.metric,
                         "value": scores[id(probe)], "baseline": baseline, "n_train": n_train,
                         "n_test": len(yt), "seed_invariant": seed_invariant})
    if not rows:
        raise XlpError(f"probe {unit.key}: no targets")
    nbytes = store.write_table(unit.output, pa.Table.from_pylist(rows))
    return {"bytes": nbytes, "rows": len(rows), "seconds": time.time() - start, "node": socket.gethostname()}
