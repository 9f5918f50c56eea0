"""Word alignment: scores against hand computations (possible links, a sentence without gold links),
SimAlign's ArgMax and IterMax on hand-made similarity matrices, the diagonal baseline, gold-file errors
naming file:line, and MiniLM on the Hansards English-French gold set against the diagonal baseline."""

import warnings

import numpy as np
import pytest
from conftest import MINILM, SHARED

from xlp.data.alignment import read_gold, read_pair
from xlp.errors import XlpError
from xlp.models.checkpoints import Checkpoint
from xlp.models.extract import FeatureExtractor
from xlp.probing.simalign import (
    Counts,
    align_sentence,
    argmax_links,
    diagonal_links,
    itermax_links,
    score,
    score_layers,
    similarity,
)
from xlp.tasks.align import AlignTask, align_rows

ALIGNMENT = SHARED / "alignment"


def _write(tmp_path, text: str, gold: str):
    (tmp_path / "xxyy.src-tgt").write_text(text, encoding="utf-8")
    (tmp_path / "xxyy.gold").write_text(gold, encoding="utf-8")
    return tmp_path / "xxyy.src-tgt", tmp_path / "xxyy.gold"


def test_scores_match_a_hand_computation_with_possible_links_and_a_sentence_without_gold(tmp_path):
    _write(tmp_path, "a b c ||| x y z\nd e ||| u v\nf g ||| w\n",
           "1-1 2p2 2-3 3p1\n\n1-1 2-1\n")
    gold = read_pair(tmp_path, "xxyy")
    assert gold[0].sure == {(0, 0), (1, 2)}
    assert gold[0].possible == {(0, 0), (1, 2), (1, 1), (2, 0)}  # P includes S
    assert gold[1].sure == gold[1].possible == frozenset()
    predicted = [{(0, 0), (1, 1), (2, 2)}, {(0, 0)}, set()]
    counts = score(gold, predicted)
    # per sentence |A|, |A∩S|, |A∩P|, |S|: (3, 1, 2, 2), (1, 0, 0, 0), (0, 0, 0, 2)
    assert counts.predicted.tolist() == [3, 1, 0] and counts.hit_sure.tolist() == [1, 0, 0]
    assert counts.hit_possible.tolist() == [2, 0, 0] and counts.sure.tolist() == [2, 0, 2]
    # corpus sums 4, 1, 2, 4: P = 2/4, R = 1/4, F1 = 2·(1/2)(1/4)/(3/4) = 1/3, AER = 1 − (1 + 2)/(4 + 4)
    got = counts.scores()
    assert got == pytest.approx({"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "aer": 0.625})
    # a bootstrap resample of sentences: the sentence without gold links alone, twice
    alone = counts.take(np.array([1, 1])).scores()
    assert alone == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "aer": 1.0}


def test_perfect_and_empty_alignments_without_division_by_zero(tmp_path):
    _write(tmp_path, "a b ||| x y\nc ||| z\n", "1-1 2p2\n\n")
    gold = read_pair(tmp_path, "xxyy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # every sure link and a possible one: precision 1, recall 1, AER 0
        assert score(gold, [{(0, 0), (1, 1)}, set()]).scores() == {"precision": 1.0, "recall": 1.0, "f1": 1.0,
                                                                    "aer": 0.0}
        empty = score(gold[1:], [set()])  # no gold, nothing predicted
        assert empty.scores() == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "aer": 1.0}
    assert isinstance(empty, Counts) and len(empty) == 1


def test_zero_indexed_links(tmp_path):
    text, gold_file = _write(tmp_path, "a b ||| x y\n", "0-1 1p0\n")
    (sent,) = read_gold(text, gold_file, one_indexed=False)
    assert sent.sure == {(0, 1)} and sent.possible == {(0, 1), (1, 0)}
    with pytest.raises(XlpError, match=r"xxyy.gold:1: link 0-1 is out of range"):
        read_gold(text, gold_file, one_indexed=True)


SIM = np.array([[0.9, 0.1, 0.3],
                [0.75, 0.2, 0.7],
                [0.1, 0.6, 0.5]])


def test_argmax_links_mutual_best_matches():
    # rows' best: 0→0, 1→0, 2→1; columns' best: 0→0, 1→2, 2→1; mutual: (0,0) and (2,1)
    assert argmax_links(SIM) == {(0, 0), (2, 1)}
    assert argmax_links(SIM.T) == {(0, 0), (1, 2)}


def test_itermax_adds_links_for_unaligned_words_with_simalign_discount():
    # round 2: source 1 and target 2 are unaligned. Weights: (1,2) both free → 1; (1,0), (1,1), (0,2), (2,2)
    # one free → 0.9; the rest 0. Row 1: 0.675, 0.18, 0.7 → target 2; column 2: 0.27, 0.7, 0.45 → source 1
    assert itermax_links(SIM) == {(0, 0), (2, 1), (1, 2)}
    # without the discount row 1 prefers target 0 (0.75) and column 0 has only source 1 left: (1, 0)
    assert itermax_links(SIM, alpha=1.0) == {(0, 0), (2, 1), (1, 0)}
    assert itermax_links(SIM, max_count=1) == argmax_links(SIM)


def test_itermax_stops_when_a_side_is_aligned_and_on_short_sentences():
    wide = np.array([[0.9, 0.1, 0.1, 0.8],
                     [0.1, 0.9, 0.1, 0.8],
                     [0.1, 0.1, 0.9, 0.8]])
    assert itermax_links(wide) == {(0, 0), (1, 1), (2, 2)}  # every source word aligned: target 3 stays out
    short = np.array([[0.9, 0.8, 0.1],
                      [0.95, 0.1, 0.1]])  # two source words: SimAlign returns ArgMax
    assert itermax_links(short) == argmax_links(short) == {(1, 0)}
    rng = np.random.default_rng(0)
    for _ in range(50):
        sim = rng.random((rng.integers(1, 9), rng.integers(1, 9)))
        assert argmax_links(sim) <= itermax_links(sim) <= itermax_links(sim, max_count=5)


def test_similarity_is_shifted_cosine():
    src = np.array([[1.0, 0.0], [0.0, 0.0]])
    tgt = np.array([[2.0, 0.0], [-1.0, 0.0], [0.0, 3.0]])
    np.testing.assert_allclose(similarity(src, tgt), [[1.0, 0.0, 0.5], [0.5, 0.5, 0.5]])


def test_a_word_without_a_vector_is_left_unaligned():
    src = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])  # source word 1 had no subword: a zero vector
    tgt = np.array([[0.0, 0.0], [0.0, 2.0], [3.0, 0.1]])
    assert align_sentence(src, tgt) == {"argmax": {(0, 2), (2, 1)}, "itermax": {(0, 2), (2, 1)}}
    assert align_sentence(src, np.zeros((2, 2)))["itermax"] == set()


def test_diagonal_baseline():
    assert diagonal_links(3, 3) == {(0, 0), (1, 1), (2, 2)}
    # source words span halves, target words quarters: each word goes to the word holding its centre
    assert diagonal_links(2, 4) == {(0, 0), (0, 1), (1, 2), (1, 3)}
    for n, m in ((1, 7), (5, 3), (13, 4)):
        links = diagonal_links(n, m)
        assert {(j, i) for i, j in links} == diagonal_links(m, n)
        assert {i for i, _ in links} == set(range(n)) and {j for _, j in links} == set(range(m))


def test_score_layers_aligns_identical_vectors_perfectly(tmp_path):
    _write(tmp_path, "a b c ||| x y z\nd e ||| u v\n", "1-1 2-2 3-3\n1-1 2-2\n")
    gold = read_pair(tmp_path, "xxyy")
    rng = np.random.default_rng(0)
    vecs = [rng.normal(size=(3, 8)), rng.normal(size=(2, 8))]
    shuffled = [v[::-1] for v in vecs]
    out = score_layers({0: vecs, 1: vecs}, {0: vecs, 1: shuffled}, gold)
    assert out[0]["argmax"].scores()["f1"] == 1.0 and out[0]["itermax"].scores()["aer"] == 0.0
    assert out[1]["argmax"].scores()["f1"] == pytest.approx(0.2)  # reversed targets: only the middle word of 3 is right
    with pytest.raises(XlpError, match="unknown method 'mwmf'"):
        score_layers({0: vecs}, {0: vecs}, gold, methods=["mwmf"])


@pytest.mark.parametrize("text, gold, message", [
    ("a b ||| x y\nc ||| z\n", "1-1 3-2\n1-1\n", r"xxyy.gold:1: link 3-2 is out of range: the sentence has 2 source"),
    ("a b ||| x y\nc ||| z\n", "1-1 2-2\n1-1\n1-1\n", r"xxyy.gold:3: xxyy.src-tgt has 2 lines but xxyy.gold has 3"),
    ("a b ||| x y\nc ||| z\nd ||| w\n", "1-1\n1-1\n", r"xxyy.src-tgt:3: xxyy.src-tgt has 3 lines but xxyy.gold has 2"),
    ("a b ||| x y\n", "1-1 2:2\n", r"xxyy.gold:1: bad link '2:2'"),
    ("a b ||| x y\nc z\n", "1-1\n1-1\n", r"xxyy.src-tgt:2: expected `source \|\|\| target`"),
    ("a b ||| x y\n ||| z\n", "1-1\n\n", r"xxyy.src-tgt:2: the source side has no words"),
])
def test_malformed_gold_names_file_and_line(tmp_path, text, gold, message):
    _write(tmp_path, text, gold)
    with pytest.raises(XlpError, match=message):
        read_pair(tmp_path, "xxyy")


def test_missing_pair_is_an_error(tmp_path):
    with pytest.raises(XlpError, match=r"cannot read .*frde.src-tgt"):
        read_pair(tmp_path, "frde")


def test_shared_gold_sets_read_completely():
    enfr, zhen = read_pair(ALIGNMENT, "enfr"), read_pair(ALIGNMENT, "zhen")
    assert len(enfr) == 447 and len(zhen) == 450
    assert sum(len(g.sure) for g in enfr) == 4038 and sum(len(g.possible) for g in enfr) == 4038 + 13400
    assert enfr[2].src == ("oh", ",", "oh", "!") and enfr[2].sure == {(0, 0), (1, 1), (2, 2), (3, 3)}
    assert len(read_pair(ALIGNMENT, "enfr", max_sentences=10)) == 10


def test_minilm_aligns_enfr_well_above_the_diagonal_at_its_best_layer():
    gold = read_pair(ALIGNMENT, "enfr", max_sentences=120)
    ex = FeatureExtractor(Checkpoint(0, str(MINILM)), layers="all", pooling="mean", precision="float32")
    rows = align_rows(ex, gold)
    assert {(r["layer"], r["method"]) for r in rows} == {(layer, m) for layer in range(7)
                                                        for m in ("argmax", "itermax", "diagonal")}
    assert {r["n_sentences"] for r in rows} == {120}
    by = {(r["layer"], r["method"]): r for r in rows}
    diagonal = by[(0, "diagonal")]
    assert all(by[(layer, "diagonal")]["f1"] == diagonal["f1"] for layer in range(7))  # it reads no vectors
    for method in ("argmax", "itermax"):
        best = max(range(7), key=lambda layer: by[(layer, method)]["f1"])
        # measured (mean pooling, 120 sentences): argmax F1 .615 and itermax .651 at layer 3, diagonal .461
        assert by[(best, method)]["f1"] > diagonal["f1"] + 0.1, (method, best, by[(best, method)], diagonal)
        assert by[(best, method)]["aer"] < diagonal["aer"] - 0.1
        assert 0 < best < 6  # alignment is best in middle layers
    # IterMax adds links for words ArgMax left out: higher recall at every layer
    assert all(by[(layer, "itermax")]["recall"] > by[(layer, "argmax")]["recall"] for layer in range(7))


def test_align_is_a_task_like_every_other(tmp_path, ray_local):
    """`tasks: [align]` through `xlp launch`: a row per layer and pair in probes.parquet (src and tgt from the
    pair), its figure and its per-layer table in the report (each layer's F1 as in probes.parquet); a malformed
    gold line stops pre-flight by file:line."""
    import re

    import pandas as pd
    from conftest import run_xlp, write_spec

    spec = dict(name="al", output=str(tmp_path / "run"), checkpoints=[{"path": str(MINILM)}],
                data={"ud_root": "${XLP_SHARED}/ud", "languages": ["en"]}, tasks=["align"], pooling="mean",
                alignment={"pairs": ["enfr"], "max_sentences": 80})
    r = run_xlp("launch", write_spec(tmp_path / "al.yaml", **spec), "--quiet")
    assert r.returncode == 0, r.stderr
    rows = pd.read_parquet(tmp_path / "run" / "results" / "probes.parquet")
    assert sorted(rows.layer) == list(range(7)) and set(zip(rows.src_lang, rows.tgt_lang)) == {("en", "fr")}
    assert rows.value.max() > rows.baseline.iloc[0] + 0.1 and rows.metric.eq("f1").all()
    assert {"precision", "recall", "aer"} <= set(rows.columns)
    # each row's F1 is its sentences' link counts summed, as the reducer's bootstrap recomputes it
    sums = np.stack([np.frombuffer(b, np.float32).reshape(4, 80).sum(axis=1) for b in rows.item_sums])
    assert np.allclose(AlignTask.value_from_sums(sums.T, 80), rows.value)
    page = (tmp_path / "run" / "report" / "index.html").read_text()
    assert "unsupervised word alignment" in page
    # the pair's figure, inline and saved (one checkpoint: the en -> fr cell of the emergence grid)
    assert '<img alt="transfer_align" src="data:image/png;base64,' in page
    assert (tmp_path / "run" / "report" / "figures" / "transfer_align.png").stat().st_size > 1000
    # the per-layer table: one row per layer, its value the layer's F1 in probes.parquet
    table = re.search(r'<section id="emergence">(.*?)</section>', page, re.S).group(1)
    header = re.findall(r"<th>(.*?)</th>", table)
    shown = [dict(zip(header, re.findall(r"<td>(.*?)</td>", tr)))
             for tr in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.S)]
    assert [(r["task"], r["src_lang"], r["tgt_lang"], r["metric"]) for r in shown] == [("align", "en", "fr", "f1")] * 7
    f1 = rows.set_index("layer").value
    assert {int(r["layer"]): r["best_value"] for r in shown} == {layer: f"{v:.4f}" for layer, v in f1.items()}
    bad = tmp_path / "gold"
    bad.mkdir()
    (bad / "enfr.src-tgt").write_text("a b ||| c d\n")
    (bad / "enfr.gold").write_text("1-1 3-2\n")
    r = run_xlp("validate", write_spec(tmp_path / "bad.yaml", **{**spec, "alignment": {"gold": str(bad),
                                                                                        "pairs": ["enfr"]}}))
    assert r.returncode == 1 and f"{bad / 'enfr.gold'}:1" in r.stderr and "Traceback" not in r.stderr
