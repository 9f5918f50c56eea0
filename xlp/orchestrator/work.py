"""What one unit does, independent of where it runs (a Ray actor, a Ray task, or a test)."""

from __future__ import annotations

import os
import socket
import time

import numpy as np
import pyarrow as pa

from xlp.errors import ShardChecksumError, XlpError
from xlp.models.extract import WordFeatureExtractor
from xlp.orchestrator.plan import ExtractUnit, ProbeUnit, SentenceUnit, bpc_texts, retrieval_texts
from xlp.spec import Spec
from xlp.storage import Store
from xlp.storage.features import PARQUET_OPTIONS, features_table, layer_column, shard_path
from xlp.storage.store import ChecksumMismatch, Written
from xlp.tasks import TASKS
from xlp.tasks import xnli
from xlp.tasks.bpc import METRIC as BPC_METRIC
from xlp.tasks.bpc import MlmScorer
from xlp.tasks.probe import LinearProbes, fit_probes, majority_accuracy
from xlp.tasks.retrieval import METRIC as RETRIEVAL_METRIC
from xlp.tasks.retrieval import retrieval_hits
from xlp.tasks.ud import read_conllu


def _fault_injection(key: str, faults: dict | None) -> None:
    """Tests break a chosen unit deterministically, from the driver's environment (the driver passes
    it along, so long-lived Ray workers need not see it): XLP_FAIL_UNIT=<substring of a unit key>
    raises in it; XLP_DIE_IN_UNIT=<substring> kills the worker process running it (as the OOM killer
    would), once: XLP_DIE_MARKER names a file created on the way down; XLP_HOLD_IN_UNIT=<substring>
    holds it, once, after writing its Ray node id and pid to XLP_HOLD_MARKER, until the test deletes
    that file (at most two minutes), so that the test can take the node down while the unit runs there."""
    faults = faults or {}
    if faults.get("unit") and faults["unit"] in key:
        raise RuntimeError(f"injected failure in {key} (XLP_FAIL_UNIT)")
    if faults.get("die") and faults["die"] in key and _first_time(faults.get("marker")):
        os._exit(137)
    hold = faults.get("hold_marker")
    if faults.get("hold") and faults["hold"] in key and _first_time(hold, f"{_ray_node()} {os.getpid()}"):
        deadline = time.time() + 120
        while os.path.exists(hold) and time.time() < deadline:
            time.sleep(0.1)


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
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def _store(spec: Spec, faults: dict | None) -> Store:
    return Store(spec.output, fail_write=(faults or {}).get("write"))


def _written(written: Written, rows: int, start: float, **extra) -> dict:
    """What the ledger records of a finished unit: its output's size and digest, and where and how long."""
    return {"bytes": written.bytes, "sha256": written.sha256, "rows": rows, "seconds": time.time() - start,
            "node": socket.gethostname(), "ray_node": _ray_node(), **extra}


def _row(unit: ProbeUnit | SentenceUnit, *, task: str, layer: int, src: str, tgt: str, seed: int, metric: str,
         value: float, baseline: float, n_train: int, n_test: int, invariant: bool, correct: np.ndarray | None,
         fit: tuple[LinearProbes, int] | None = None) -> dict:
    """One row of probes.parquet; `correct` (per test item) is bit-packed for the reducer's paired bootstrap;
    `fit` (the probes and this row's index among them) gives the L-BFGS iterations and final gradient
    max-norm of the row's probe (null for tasks without one)."""
    return {"checkpoint": unit.ckpt.name, "step": unit.ckpt.step, "task": task, "layer": layer,
            "src_lang": src, "tgt_lang": tgt, "seed": seed, "metric": metric, "value": float(value),
            "baseline": baseline, "n_train": n_train, "n_test": n_test, "seed_invariant": invariant,
            "correct": None if correct is None else np.packbits(correct).tobytes(),
            "probe_iters": None if fit is None else int(fit[0].iterations[fit[1]]),
            "probe_grad_norm": None if fit is None else float(fit[0].grad_norm[fit[1]])}


def _write_rows(store: Store, unit: ProbeUnit | SentenceUnit, rows: list[dict], start: float) -> dict:
    return _written(store.write_table(unit.output, pa.Table.from_pylist(rows)), len(rows), start)


class ExtractionWorker:
    """Holds one loaded checkpoint at a time and writes feature shards."""

    def __init__(self, spec: Spec, layers: list[int], device: str | None = None):
        self.spec, self.layers, self.device = spec, layers, device
        self.store = Store(spec.output)
        self.extractor: WordFeatureExtractor | None = None

    def run(self, unit: ExtractUnit, faults: dict | None = None) -> dict:
        start = time.time()
        _fault_injection(unit.key, faults)
        self.store.fail_write = (faults or {}).get("write")
        if self.extractor is None or self.extractor.ckpt != unit.ckpt:
            self.extractor = None  # free the previous checkpoint before loading the next
            self.extractor = WordFeatureExtractor(
                unit.ckpt, self.layers, self.spec.pooling, self.spec.batch_tokens, self.device,
                self.spec.trust_remote_code, self.spec.allow_pickle)
        lenient = self.spec.data.conllu == "lenient"
        sentences = read_conllu(unit.file, unit.max_sentences, (lambda _: None) if lenient else None)
        vecs = self.extractor.extract([s.forms for s in sentences])
        table = features_table(sentences, vecs, self.spec.feature_dtype)
        written = self.store.write_table(unit.output, table, **PARQUET_OPTIONS)
        return _written(written, table.num_rows, start, device=str(self.extractor.device))


def _read(store: Store, needs: tuple[str, ...], step: int, lang: str, split: str, layers: tuple[int, ...],
          digests: dict | None):
    """A shard's layer columns and the label columns `needs`, after checking its bytes against the ledger's digest."""
    path = shard_path(step, lang, split)
    key, digest = (digests or {}).get(path, (None, None))
    cols = [layer_column(layer) for layer in layers]
    try:
        return store.read_table(path, columns=[*cols, *needs], sha256=digest), cols
    except ChecksumMismatch:
        raise ShardChecksumError("extract", key, path) from None


def run_probe(spec: Spec, unit: ProbeUnit, faults: dict | None = None, digests: dict | None = None) -> dict:
    """Fit the source's probes for every layer of the unit, per seed (once when the seed can change
    neither the examples nor the fit), and score them on every target's test examples, for each of
    the unit's tasks (the first task's probe serves the others: arc and arc_uas share one fit)."""
    start = time.time()
    _fault_injection(unit.key, faults)
    store = _store(spec, faults)
    tasks = [TASKS[name] for name in unit.tasks]
    fit = tasks[0]
    needs = tuple(dict.fromkeys(c for task in tasks for c in task.needs))
    step = unit.ckpt.step
    table, cols = _read(store, needs, step, unit.src, unit.train_split, unit.layers, digests)
    cap = spec.probe.max_train_words
    probes, n_train, invariant = {}, {}, False
    for seed in spec.probe.seeds:
        if invariant:
            probes[seed], n_train[seed] = probes[spec.probe.seeds[0]], n_train[spec.probe.seeds[0]]
            continue
        X, y = fit.examples(table, cols, seed)
        invariant = not fit.seeded and (cap is None or len(y) <= cap)
        if cap is not None and len(y) > cap:
            idx = np.sort(np.random.default_rng(seed).choice(len(y), cap, replace=False))
            X, y = X[:, idx], y[idx]
        warm = next(iter(probes.values()), None)  # the first seed's optimum: a start closer to this one's
        probes[seed] = fit_probes(X, y, spec.probe.l2, spec.probe.max_iter, spec.probe.tol, init=warm)
        n_train[seed] = len(y)
    del table
    rows = []
    for tgt, split in unit.targets:
        test, cols = _read(store, needs, step, tgt, split, unit.layers, digests)
        for task in tasks:
            rows += _score(unit, task, probes, n_train, invariant, tgt, test, cols)
    if not rows:
        raise XlpError(f"probe {unit.key}: no targets")
    return _write_rows(store, unit, rows, start)


def _score(unit: ProbeUnit, task, probes: dict, n_train: dict, invariant: bool, tgt: str, test: pa.Table,
           cols: list[str]) -> list[dict]:
    """One task's rows on one target: every seed's probe scored on the target's test examples."""
    evaluate = getattr(task, "evaluate", None)  # a task that scores its own way (head selection)
    if evaluate is None:
        Xt, yt = task.examples(test, cols, 0)  # one fixed test set for every seed and checkpoint
        baseline = majority_accuracy(yt)
    else:
        baseline = task.test_baseline(test)
    scores: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    rows = []
    for seed, probe in probes.items():
        if id(probe) not in scores:
            scores[id(probe)] = evaluate(probe, test, cols) if evaluate else probe.score(Xt, yt, task.metric)
        values, correct = scores[id(probe)]
        for li, layer in enumerate(unit.layers):
            rows.append(_row(unit, task=task.name, layer=layer, src=unit.src, tgt=tgt, seed=seed,
                             metric=task.metric, value=values[li], baseline=baseline, n_train=n_train[seed],
                             n_test=correct.shape[1], invariant=invariant, correct=correct[li], fit=(probe, li)))
    return rows


def run_sentence_unit(spec: Spec, unit: SentenceUnit, faults: dict | None = None, device: str | None = None) -> dict:
    """A sentence task's unit: its rows, in the probe outputs' layout, written like a probe's."""
    from xlp.data.ud_release import resolve_ud_root

    start = time.time()
    _fault_injection(unit.key, faults)
    store = _store(spec, faults)
    ud_root = resolve_ud_root(spec.data.ud_root, spec.data.languages, quiet=True)
    rows = {"retrieval": _retrieval_rows, "bpc": _bpc_rows, "xnli": _xnli_rows}[unit.task](spec, unit, ud_root, device)
    return _write_rows(store, unit, rows, start)


def _xnli_rows(spec: Spec, unit: SentenceUnit, ud_root, device: str | None) -> list[dict]:
    """Probes on [u; v; |u - v|; u * v] sentence-pair vectors: fit on each source's dev pairs (all
    layers in one solve), scored on every target's test pairs."""
    d = spec.data
    splits = {"dev": xnli.read_xnli(d.xnli, "dev", list(unit.langs), d.max_train_sentences),
              "test": xnli.read_xnli(d.xnli, "test", list(unit.langs), d.max_test_sentences)}
    extractor = WordFeatureExtractor(unit.ckpt, list(unit.layers), batch_tokens=spec.batch_tokens, device=device,
                                     trust_remote_code=spec.trust_remote_code, allow_pickle=spec.allow_pickle)

    def features(premises, hypotheses) -> np.ndarray:  # (L, n, 4d)
        u, v = extractor.sentence_means(premises), extractor.sentence_means(hypotheses)
        return np.stack([xnli.pair_features(u[layer], v[layer]) for layer in unit.layers])

    data = {(split, lang): (features(p, h), y) for split, by_lang in splits.items() for lang, (p, h, y) in by_lang.items()}
    rows = []
    for src in [lang for lang in unit.langs if ("dev", lang) in data]:
        X, y = data[("dev", src)]
        probe = fit_probes(X, y, spec.probe.l2, spec.probe.max_iter, spec.probe.tol)
        for tgt in [lang for lang in unit.langs if ("test", lang) in data and (spec.cross_lingual or lang == src)]:
            Xt, yt = data[("test", tgt)]
            values, correct = probe.score(Xt, yt, xnli.METRIC)
            for li, layer in enumerate(unit.layers):
                for seed in spec.probe.seeds:  # the fit is deterministic: one probe for every seed
                    rows.append(_row(unit, task=unit.task, layer=layer, src=src, tgt=tgt, seed=seed,
                                     metric=xnli.METRIC, value=values[li], baseline=majority_accuracy(yt),
                                     n_train=len(y), n_test=len(yt), invariant=True, correct=correct[li],
                                     fit=(probe, li)))
    return rows


def _bpc_rows(spec: Spec, unit: SentenceUnit, ud_root, device: str | None) -> list[dict]:
    texts = bpc_texts(spec, ud_root)
    scorer = MlmScorer(unit.ckpt, spec.batch_tokens, device, spec.trust_remote_code)
    rows = []
    for lang in unit.langs:
        bits, chars, tokens = scorer.bits(texts[lang])
        uniform = np.log2(scorer.vocab_size) * tokens.sum() / chars.sum()  # a model that knows nothing
        for seed in spec.probe.seeds:
            rows.append(_row(unit, task=unit.task, layer=unit.layers[0], src=lang, tgt=lang, seed=seed,
                             metric=BPC_METRIC, value=bits.sum() / chars.sum(), baseline=float(uniform),
                             n_train=0, n_test=len(bits), invariant=True, correct=None))
    return rows


def _retrieval_rows(spec: Spec, unit: SentenceUnit, ud_root, device: str | None) -> list[dict]:
    """Sentence vectors of every language's aligned text at every layer; accuracy@1 for each pair."""
    texts, _ = retrieval_texts(spec, ud_root)
    extractor = WordFeatureExtractor(unit.ckpt, list(unit.layers), batch_tokens=spec.batch_tokens, device=device,
                                     trust_remote_code=spec.trust_remote_code, allow_pickle=spec.allow_pickle)
    vectors = {lang: extractor.sentence_means(texts[lang]) for lang in unit.langs}
    n = len(texts[unit.langs[0]])
    rows = []
    for layer in unit.layers:
        for src in unit.langs:
            for tgt in unit.langs:
                hits = retrieval_hits(vectors[src][layer], vectors[tgt][layer])
                for seed in spec.probe.seeds:  # no probe: one value, repeated so every task has the same rows
                    rows.append(_row(unit, task=unit.task, layer=layer, src=src, tgt=tgt, seed=seed,
                                     metric=RETRIEVAL_METRIC, value=hits.mean(), baseline=1.0 / n, n_train=0,
                                     n_test=n, invariant=True, correct=hits))
    return rows
