"""Control tasks (Hewitt & Liang 2019) for POS, arcs and relations: one fixed outcome per word type, drawn from
the training data's distribution, and each task's selectivity table."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
from conftest import UD

from xlp.data.conllu import read_conllu
from xlp.probing.pairs import sentence_rows
from xlp.storage.features import features_table
from xlp.tasks import BUILT_IN


def _table(split: str, n: int):
    sents = read_conllu(UD / "UD_English-EWT" / f"en_ewt-ud-{split}.conllu", max_sentences=n)
    words = sum(len(s.forms) for s in sents)
    return features_table(sents, {1: np.random.default_rng(0).normal(size=(words, 4))})


def _forms(table) -> np.ndarray:
    return np.array([f.lower() for f in table.column("form").to_numpy(zero_copy_only=False)])


def _shares(values: np.ndarray, support: np.ndarray) -> np.ndarray:
    return np.array([(values == v).mean() for v in support])


def test_control_labels_are_fixed_per_type_and_drawn_from_the_training_distribution():
    train, test = _table("dev", 400), _table("test", 150)
    task = BUILT_IN["pos_control"].trained_on(train)
    labels = {}
    for table in (train, test):
        for form, tag in zip(_forms(table), task.examples(table, ["layer_1"])[1]):
            assert labels.setdefault(form, tag) == tag  # one tag per type, the same in the test split
    # the types' tags follow the training words' tag distribution (Hewitt & Liang), not a uniform one over tags
    upos = train.column("upos").to_numpy(zero_copy_only=False)
    tags = np.unique(upos)
    tv = np.abs(_shares(np.array(list(labels.values())), tags) - _shares(upos, tags)).sum() / 2
    assert tv < 0.08, tv  # measured 0.03; a uniform draw over the 17 tags is 0.34 away
    again = BUILT_IN["pos_control"].trained_on(train).examples(test, ["layer_1"])[1]
    assert (again == task.examples(test, ["layer_1"])[1]).all()  # the same seed, the same labels
    other = BUILT_IN["pos_control"].configured(BUILT_IN["pos_control"].Options(seed=1)).trained_on(train)
    assert (other.examples(test, ["layer_1"])[1] != again).mean() > 0.5

    deprel = BUILT_IN["deprel_control"].trained_on(train)
    head_row, start, lengths = sentence_rows(train)
    dep = np.flatnonzero(head_row >= 0)
    relations = defaultdict(set)
    for form, rel in zip(_forms(train)[dep], deprel.examples(train, ["layer_1"])[1]):
        relations[form].add(rel)
    assert max(map(len, relations.values())) == 1
    gold = BUILT_IN["deprel"].examples(train, ["layer_1"])[1]
    assert set().union(*relations.values()) <= set(gold) and len(set().union(*relations.values())) > 10

    arc = BUILT_IN["arc_control"].trained_on(train)
    heads = arc.control_heads(train)
    assert (heads[dep] != dep).all() and (heads[dep] >= start[dep]).all()
    assert (heads[dep] < start[dep] + lengths[dep]).all()
    offsets = defaultdict(set)  # a type's offset, where the sentence did not clip it
    gold_offsets = head_row[dep] - dep
    for form, d, h in zip(_forms(train)[dep], dep, heads[dep]):
        if start[d] < min(d, h) and max(d, h) < start[d] + lengths[d] - 1:
            offsets[form].add(h - d)
    assert max(map(len, offsets.values())) == 1
    assert set().union(*offsets.values()) <= set(gold_offsets)
    X, y = arc.examples(train, ["layer_1"], 0)
    assert X.shape[1] == len(y) == len(arc.item_sentences(train)) and y.mean() == 0.5


def test_every_control_task_has_its_selectivity_table():
    rng = np.random.default_rng(0)
    rows = [{"task": task, "step": step, "layer": layer, "src_lang": "en", "tgt_lang": tgt, "seed": seed,
             "value": rng.random()}
            for task in ("pos", "pos_control", "arc", "arc_control", "arc_uas", "arc_uas_control", "deprel",
                         "deprel_control")
            for step in (0, 100) for layer in (1, 2) for tgt in ("en", "de") for seed in (0, 1)]
    probes = pd.DataFrame(rows)
    mean = probes.groupby(["task", "step", "layer", "src_lang", "tgt_lang"]).value.mean()
    for control, file in (("pos_control", "selectivity"), ("arc_control", "selectivity_arc"),
                          ("arc_uas_control", "selectivity_arc_uas"), ("deprel_control", "selectivity_deprel")):
        task = BUILT_IN[control].controls
        (title, table), = BUILT_IN[control].extra_tables(probes).values()
        assert list(BUILT_IN[control].extra_tables(probes)) == [file] and task in title
        assert len(table) == 8
        for r in table.itertuples():
            key = (r.step, r.layer, r.src_lang, r.tgt_lang)
            assert np.isclose(getattr(r, task), mean[(task, *key)]) and np.isclose(r.control, mean[(control, *key)])
            assert np.isclose(r.selectivity, mean[(task, *key)] - mean[(control, *key)])
        assert BUILT_IN[control].extra_tables(probes[probes.task != task]) == {}


def test_head_selection_has_a_control_scored_with_the_arc_control_probe(tmp_path):
    """arc_uas_control (Hewitt & Liang's control of head selection): scored with arc_control's probe (one unit fits
    it for both), each dependent's chosen head against its word type's control head, not its gold head; its options
    must be arc_control's (else the probe was fit on other control heads than those it is scored against)."""
    from conftest import write_spec

    from xlp.config import load_spec
    from xlp.errors import XlpError
    from xlp.probing.linear import fit_probes
    from xlp.run.plan import _fit_groups
    from xlp.tasks import configure

    train, test = _table("dev", 200), _table("test", 100)
    control = BUILT_IN["arc_uas_control"].trained_on(train)
    probe = fit_probes(*BUILT_IN["arc_control"].trained_on(train).examples(train, ["layer_1"], 0), max_iter=50)
    values, hits = control.evaluate(probe, test, ["layer_1"])
    gold_values, gold_hits = BUILT_IN["arc_uas"].evaluate(probe, test, ["layer_1"])
    head_row, start, lengths = sentence_rows(test)
    dep = np.flatnonzero(head_row >= 0)
    heads = control.control_heads(test)
    assert hits.shape == gold_hits.shape == (1, len(dep)) and len(control.item_sentences(test)) == len(dep)
    assert control.test_baseline(test) == BUILT_IN["arc_uas"].test_baseline(test)
    chosen_is_gold = gold_hits[0]  # the same probe chooses the same heads: they are hits against one head or other
    differ = heads[dep] != head_row[dep]
    assert differ.mean() > 0.5 and (hits[0][~differ] == chosen_is_gold[~differ]).all()
    assert not (hits[0][differ] & chosen_is_gold[differ]).any() and values[0] == hits[0].mean()

    tasks = ["arc_control", "arc_uas_control", "arc", "arc_uas"]
    groups = _fit_groups([BUILT_IN[t] for t in tasks])
    assert sorted(tuple(t.name for t in g) for g in groups) == [("arc", "arc_uas"), ("arc_control", "arc_uas_control")]
    spec = {"name": "c", "output": str(tmp_path / "run"), "checkpoints": [{"path": str(tmp_path)}],
            "data": {"ud_root": str(UD), "languages": ["en"]}, "tasks": tasks}
    configure(load_spec(write_spec(tmp_path / "same.yaml", **spec, arc_control={"seed": 3},
                                   arc_uas_control={"seed": 3})))
    with pytest.raises(XlpError, match="other.yaml.*arc_uas_control.*must equal arc_control's"):
        configure(load_spec(write_spec(tmp_path / "other.yaml", **spec, arc_control={"seed": 3})))
