"""Test items carry their sentence (issue #25): every word task says which sentence each scored item comes from,
and the reducer resamples, halves and sign-tests sentences."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import UD

from xlp.analysis.curves import by_sentence, item_scores, per_sentence
from xlp.data.conllu import read_conllu
from xlp.probing.pairs import arcs_and_non_arcs, sentence_rows
from xlp.storage.features import features_table
from xlp.tasks import BUILT_IN


def _table(n=40, d=4):
    sents = read_conllu(UD / "UD_French-GSD" / "fr_gsd-ud-test.conllu", max_sentences=n)
    words = sum(len(s.forms) for s in sents)
    return features_table(sents, {1: np.random.default_rng(0).normal(size=(words, d))})


def test_every_word_task_names_each_test_items_sentence():
    table = _table()
    sent = table.column("sent_idx").to_numpy()
    for name in ("pos", "pos_control", "arc", "deprel"):
        _, y = BUILT_IN[name].examples(table, ["layer_1"], 0)  # the test set: seed 0, as the worker scores it
        assert len(BUILT_IN[name].item_sentences(table)) == len(y), name
    heads, deps, _ = arcs_and_non_arcs(table, 0)
    assert (BUILT_IN["arc"].item_sentences(table) == sent[deps]).all()  # an arc and its non-arc: one sentence
    head_row, _, _ = sentence_rows(table)
    assert (BUILT_IN["arc_uas"].item_sentences(table) == sent[head_row >= 0]).all()  # each scored dependent's
    assert (BUILT_IN["deprel"].item_sentences(table) == sent[head_row >= 0]).all()


def test_items_are_summed_per_sentence_and_the_metric_recomputed():
    rng = np.random.default_rng(1)
    sent = np.array([2, 0, 0, 1, 2, 2, 1], dtype=np.int32)  # not in order (arcs then non-arcs)
    items = (rng.random((3, 2, 1, 7)) < 0.5).astype(np.uint8)
    sums = by_sentence(items, sent)
    assert sums.shape == (3, 2, 2, 3)
    for s in range(3):
        assert (sums[:, :, 0, s] == items[:, :, 0, sent == s].sum(axis=-1)).all()
        assert (sums[:, :, 1, s] == (sent == s).sum()).all()
    value = per_sentence(BUILT_IN["pos"].value_from_sums)
    # accuracy from the sentences' sums: the share of items right, whatever the sentences' sizes
    total = np.moveaxis(sums.sum(axis=-1), 2, 0)  # (k + 1, T, K)
    assert np.allclose(value(total, 3), items[:, :, 0].mean(axis=-1))


def _rows(groups: list[bytes | None]) -> pd.DataFrame:
    hit = np.array([1, 0, 1, 1, 0, 1], dtype=bool)
    return pd.DataFrame([{"step": 100 * t, "task": "pos", "layer": 0, "src_lang": "en", "tgt_lang": "en", "seed": 0,
                          "n_test": 6, "correct": np.packbits(hit).tobytes(), "item_groups": g}
                         for t, g in enumerate(groups)])


def test_the_reducer_resamples_sentences_and_refuses_rows_that_disagree():
    same = np.array([0, 0, 1, 1, 1, 2], dtype=np.int32).tobytes()
    (curves, sentences), = item_scores(_rows([same, same])).values()
    assert sentences and curves[("pos", 0, "en", "en")].shape == (2, 1, 2, 3)  # 3 sentences, sums and counts
    (curves, sentences), = item_scores(_rows([None, None])).values()  # an older run's rows: items
    assert not sentences and curves[("pos", 0, "en", "en")].shape == (2, 1, 1, 6)
    with pytest.raises(ValueError, match="different sentences"):
        item_scores(_rows([same, np.arange(6, dtype=np.int32).tobytes()]))
