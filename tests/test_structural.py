"""Structural probes (`distance`, `depth`): their scores against a plain computation with scipy on the same
predictions, MiniLM's distance probe above the right-branching chain, and their units in a run."""

import shutil
from collections import deque

import numpy as np
import pandas as pd
import pytest
from conftest import MINILM, UD
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.stats import spearmanr

from xlp.config import ProbeSpec, Spec
from xlp.data.conllu import read_conllu
from xlp.models.checkpoints import Checkpoint
from xlp.models.extract import FeatureExtractor
from xlp.probing.trees import Trees
from xlp.storage.features import features_table, layer_column
from xlp.tasks import BUILT_IN
from xlp.tasks.structural import StructuralOptions

LAYERS = [0, 3]
COLS = [layer_column(layer) for layer in LAYERS]


@pytest.fixture(scope="module")
def ewt():
    """MiniLM feature tables (as stored) of EWT dev (train) and test sentences, and the test sentences."""
    ex = FeatureExtractor(Checkpoint(0, str(MINILM)), layers=LAYERS)
    out = {}
    for split, n in (("dev", 80), ("test", 80)):
        sentences = read_conllu(UD / "UD_English-EWT" / f"en_ewt-ud-{split}.conllu", n)
        out[split] = features_table(sentences, ex.extract([s.forms for s in sentences]), "float16"), sentences
    return out


def _tree_distances(heads: list[int]) -> np.ndarray:
    """Path lengths by breadth-first search from every word (heads 1-based, 0 the root)."""
    n = len(heads)
    nbrs = [[] for _ in range(n)]
    for d, h in enumerate(heads):
        if h > 0:
            nbrs[d].append(h - 1)
            nbrs[h - 1].append(d)
    out = np.zeros((n, n))
    for s in range(n):
        seen, todo = {s: 0}, deque([s])
        while todo:
            u = todo.popleft()
            for v in nbrs[u]:
                if v not in seen:
                    seen[v] = seen[u] + 1
                    todo.append(v)
        out[s] = [seen[v] for v in range(n)]
    return out


def _macro(per_sentence: list[tuple[int, list[float]]]) -> float:
    """Mean over the sentences of each length 5-50 (their values pooled), then over those lengths."""
    by_len = {}
    for n, values in per_sentence:
        if 5 <= n <= 50:
            by_len.setdefault(n, []).extend(values)
    return float(np.mean([np.mean(v) for v in by_len.values()]))


def test_uuas_root_accuracy_and_spearman_equal_a_plain_computation(ewt):
    """On the predictions of fitted distance and depth probes (MiniLM layers 0 and 3, 80 EWT sentences), xlp's
    per-sentence UUAS counts, root hits and Spearman averages equal scipy's minimum_spanning_tree and
    spearmanr on the same predictions, with gold trees from breadth-first search; the baselines likewise."""
    (train, _), (test, sentences) = ewt["dev"], ewt["test"]
    trees = Trees.of(test)
    probe = ProbeSpec(max_iter=15)
    for name in ("distance", "depth"):
        task = BUILT_IN[name].configured(StructuralOptions(rank=16))
        probes, n_train = task.fit(train, COLS, probe)
        assert n_train == 80 and probes.iterations.min() > 0
        values, items, extra = task.evaluate(probes, test, COLS)
        predicted = probes.predict(test, COLS, trees)
        scored = [i for i, s in enumerate(sentences) if sum(u != "PUNCT" for u in s.upos) >= 2]
        assert np.array_equal(task.item_sentences(test), scored)
        for li in range(len(LAYERS)):
            per_sentence, spearman, base_hits = [], [], []
            for i in scored:
                s, pred = sentences[i], predicted[li][i]
                gold = _tree_distances(s.heads)
                keep = [w for w, u in enumerate(s.upos) if u != "PUNCT"]
                gold_edges = {frozenset((d, h - 1)) for d, h in enumerate(s.heads)
                              if h > 0 and d in keep and h - 1 in keep}
                if name == "distance":
                    mst = minimum_spanning_tree(pred[np.ix_(keep, keep)]).tocoo()
                    edges = {frozenset((keep[a], keep[b])) for a, b in zip(mst.row, mst.col)}
                    assert len(edges) == len(keep) - 1
                    per_sentence.append((len(edges & gold_edges), len(gold_edges)))
                    rows = [spearmanr(pred[w], gold[w]).statistic for w in range(len(s.heads))]
                    chain = {frozenset(p) for p in zip(keep[:-1], keep[1:])}
                    base_hits.append((len(chain & gold_edges), len(gold_edges)))
                else:
                    root = s.heads.index(0)
                    per_sentence.append(keep[int(np.argmin(pred[keep]))] == root)
                    rows = [spearmanr(pred, gold[root]).statistic]
                spearman.append((len(s.heads), rows))
            if name == "distance":
                counts = np.array(per_sentence).T
                assert np.array_equal(items[li], counts)
                assert values[li] == counts[0].sum() / counts[1].sum()
                assert task.value_from_sums(items[li].sum(1), items.shape[-1]) == values[li]
                base = np.array(base_hits).sum(0)
                assert task.test_baseline(test) == base[0] / base[1]
            else:
                assert np.array_equal(items[li], per_sentence) and values[li] == np.mean(per_sentence)
            assert extra[li]["spearman"] == pytest.approx(_macro(spearman), rel=1e-12, abs=1e-12)


def test_structural_tasks_in_a_run_redo_only_what_changed(clean_grid, tmp_path):
    """The clean grid's run copied and relaunched with `distance` and `depth` added: no feature is extracted
    again, each row carries its per-sentence sums (UUAS) or hits (root accuracy),
    its Spearman columns and its baseline; a relaunch does nothing, a new `distance.rank` redoes only the
    distance units, and `probe.kind: mlp` only the POS units."""
    from xlp.run.driver import launch

    spec, run, _, _ = clean_grid
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    spec = spec.model_copy(update={"output": str(copy), "tasks": ["pos", "distance", "depth"],
                                   "probe": spec.probe.model_copy(update={"max_iter": 20})})
    res = launch(spec, quiet=True)
    # 3 steps x 3 sources, three tasks: pos too, since it reads probe.max_iter as well
    assert not res.failed and res.extracted == 0 and res.probed == 3 * 9
    assert launch(spec, quiet=True).probed == 0
    probes = pd.read_parquet(copy / "results" / "probes.parquet")
    for name, metric in (("distance", "uuas"), ("depth", "root_accuracy")):
        rows = probes[probes.task == name]
        assert set(rows.metric) == {metric} and set(rows.probe_kind) == {"structural"} and rows.seed_invariant.all()
        assert rows.spearman.between(-1, 1).all() and rows.baseline.between(0, 1).all()
        assert rows.value.between(0, 1).all() and rows.n_train.eq(80).all()
    uuas = probes[probes.task == "distance"].iloc[0]
    sums = np.frombuffer(uuas["item_sums"], np.float32).reshape(-1, uuas.n_test)
    assert sums.shape[0] == 2 and sums[0].sum() / sums[1].sum() == pytest.approx(uuas.value, rel=1e-6)
    emergence = pd.read_parquet(copy / "results" / "emergence.parquet")
    assert {"distance", "depth"} <= set(emergence.task)

    ranked = Spec.model_validate({**spec.model_dump(), "distance": {"rank": 8}})
    res = launch(ranked, quiet=True)
    assert not res.failed and (res.extracted, res.probed) == (0, 9)
    again = pd.read_parquet(copy / "results" / "probes.parquet")
    same = probes.task != "distance"
    assert again[same].drop(columns="checkpoint").equals(probes[same].drop(columns="checkpoint"))
    assert (again[~same].value.to_numpy() != probes[~same].value.to_numpy()).any()
    mlp = ranked.model_copy(update={"probe": ranked.probe.model_copy(update={"kind": "mlp", "hidden": 8})})
    res = launch(mlp, quiet=True)  # the structural probes read no probe.kind: only pos is redone
    assert not res.failed and (res.extracted, res.probed) == (0, 9)
    assert set(pd.read_parquet(copy / "results" / "probes.parquet").groupby("task").probe_kind.first()) == {
        "mlp", "structural"}


def test_a_word_cap_takes_whole_sentences_for_the_structural_probes(ewt):
    """probe.max_train_words for distance and depth (their items are sentences): whole sentences, drawn by the seed,
    up to the one that would pass the cap; the same seed the same ones; and the probes fit on them."""
    from xlp.probing.structural import fit_structural
    from xlp.storage.features import capped_sentences

    table, sentences = ewt["dev"]
    cap = table.num_rows // 3
    capped = capped_sentences(table, cap, np.random.default_rng(0))
    sent = capped.column("sent_idx").to_numpy()
    kept, words = np.unique(sent, return_counts=True)
    assert 0 < capped.num_rows <= cap < table.num_rows
    assert all(words[i] == len(sentences[k].forms) for i, k in enumerate(kept))  # no sentence cut
    assert capped.num_rows > cap - max(len(s.forms) for s in sentences)  # it stops at the draw that would not fit
    again = capped_sentences(table, cap, np.random.default_rng(0)).column("sent_idx").to_numpy()
    other = capped_sentences(table, cap, np.random.default_rng(1)).column("sent_idx").to_numpy()
    assert np.array_equal(sent, again) and not np.array_equal(sent, other)
    probes = fit_structural(capped, COLS, pairwise=False, rank=8, max_iter=50)
    assert probes.maps.shape[0] == len(COLS) and np.isfinite(probes.maps.numpy()).all()


def test_every_built_in_word_feature_task_honours_the_interface_of_its_kind(ewt):
    """Called as xlp/tasks/base.py declares them: each WordTask's `examples(table, layer_columns)` gives features
    (L, n, d) and n labels, each OwnProbeTask (distance, depth) fits, scores and gives a baseline, and every task
    on word features is one kind or the other (a structural task's `examples` raised TypeError)."""
    from xlp.tasks import FeatureTask, OwnProbeTask, WordTask

    (train, _), (test, _) = ewt["dev"], ewt["test"]
    feature_tasks = [t for t in BUILT_IN.values() if isinstance(t, FeatureTask)]
    assert {"pos", "arc", "deprel", "distance", "depth"} <= {t.name for t in feature_tasks}
    for task in feature_tasks:
        assert isinstance(task, WordTask) != isinstance(task, OwnProbeTask), task.name
        task = task.trained_on(train)
        if isinstance(task, WordTask):
            X, y = task.examples(train, COLS)
            assert X.shape[:2] == (len(COLS), len(y)) and X.shape[2] >= 384 and len(np.unique(y)) >= 2, task.name
        else:
            probes, n_train = task.fit(train, COLS, ProbeSpec(max_iter=5))
            values, items, *_ = task.evaluate(probes, test, COLS)
            assert n_train == 80 and values.shape == (len(COLS),) and items.shape[-1] == len(task.item_sentences(test))
            assert 0 <= task.test_baseline(test) <= 1
