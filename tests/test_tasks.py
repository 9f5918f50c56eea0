"""Task example builders on a real feature shard layout (labels from real CoNLL-U)."""

import numpy as np
from conftest import UD

from xlp.data.conllu import read_conllu
from xlp.probing.pairs import arcs_and_non_arcs, sentence_rows
from xlp.storage.features import features_table
from xlp.tasks import BUILT_IN as TASKS


def _table(n=50, d=4):
    sents = read_conllu(UD / "UD_French-GSD" / "fr_gsd-ud-test.conllu", max_sentences=n)
    words = sum(len(s.forms) for s in sents)
    rng = np.random.default_rng(0)
    return sents, features_table(sents, {1: rng.normal(size=(words, d)), 2: rng.normal(size=(words, d))})


def test_non_arcs_stay_in_sentence_and_are_not_arcs():
    sents, table = _table()
    head_row, start, lengths = sentence_rows(table)
    heads, deps, labels = arcs_and_non_arcs(table, seed=3)
    sent = table.column("sent_idx").to_numpy()
    assert (sent[heads] == sent[deps]).all()
    pos, neg = labels == 1, labels == 0
    assert pos.sum() == neg.sum() > 0
    assert (head_row[deps[pos]] == heads[pos]).all()
    assert (head_row[deps[neg]] != heads[neg]).all() and (heads[neg] != deps[neg]).all()
    again = arcs_and_non_arcs(table, seed=3)
    other = arcs_and_non_arcs(table, seed=4)
    assert (again[0] == heads).all() and not (other[0] == heads).all()


def test_task_shapes_and_labels():
    sents, table = _table()
    X, y = TASKS["pos"].examples(table, ["layer_1", "layer_2"])
    assert X.shape == (2, len(y), 4) and list(y[:3]) == sents[0].upos[:3]
    X, y = TASKS["arc"].examples(table, ["layer_1"], seed=0)
    assert X.shape[0] == 1 and X.shape[2] == 12 and set(np.unique(y)) == {0, 1}
    X, y = TASKS["deprel"].examples(table, ["layer_2"])
    n_arcs = sum(1 for s in sents for h in s.heads if h > 0)
    assert X.shape == (1, n_arcs, 12) and ":" not in "".join(y)


def test_probe_units_group_tasks_that_share_a_probe_and_run_each_task_once(tmp_path):
    """arc_uas joins arc's unit (the arc probe first, whatever the spec's order); a task named twice
    runs once; arc_uas alone is a unit of its own."""
    from conftest import MINILM, write_spec

    from xlp.config import load_spec
    from xlp.run.plan import make_plan

    def units(tasks):
        spec = load_spec(write_spec(tmp_path / "t.yaml", name="t", output=str(tmp_path / "run"),
                                    checkpoints=[{"path": str(MINILM), "step": 0}],
                                    data={"ud_root": "${XLP_SHARED}/ud", "languages": ["en"], "max_train_sentences": 5,
                                          "max_test_sentences": 5}, tasks=tasks, layers=[1]))
        return [u.task for u in make_plan(spec).probe]

    assert units(["pos", "arc_uas", "pos", "arc"]) == ["pos", "arc+arc_uas"]
    assert units(["arc_uas"]) == ["arc_uas"]


def test_bpc_on_plain_text_equals_bpc_on_the_same_sentences_from_ud(tmp_path, tiny_series, ray_local):
    """`bpc.text` scores plain text, in languages with no treebank in the run (the paper's BPC covers 94): a
    `<lang>.txt` holding a UD test split's sentences gives the bits per character of the split itself at every
    checkpoint; Arabic, from the UDHR and not in data.languages, gets its rows; a line that is not UTF-8 stops
    pre-flight naming its file and line."""
    import pandas as pd
    from conftest import SHARED, run_xlp, write_spec

    spec = dict(name="b", checkpoints=[{"path": f"{tiny_series}/step_*"}], tasks=["bpc"],
                data={"ud_root": "${XLP_SHARED}/ud", "languages": ["en", "vi"], "max_test_sentences": 30})
    r = run_xlp("launch", write_spec(tmp_path / "ud.yaml", output=str(tmp_path / "ud"), **spec), "--quiet")
    assert r.returncode == 0, r.stderr

    text = tmp_path / "text"
    text.mkdir()
    for lang, file in (("en", "UD_English-EWT/en_ewt-ud-test.conllu"),
                       ("vi", "UD_Vietnamese-VTB/vi_vtb-ud-test.conllu")):
        lines = [s.text for s in read_conllu(UD / file, 30) if s.text]
        assert all(t == t.strip() and "\n" not in t for t in lines)
        (text / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8-sig")  # a BOM, as editors save
    udhr = pd.read_csv(SHARED / "udhr" / "udhr.tsv", sep="\t")
    (text / "ar.txt").write_text("\n".join(udhr[udhr.lang == "ar"].text.head(20)) + "\n", encoding="utf-8")
    by_text = write_spec(tmp_path / "text.yaml", output=str(tmp_path / "text-run"), bpc={"text": str(text)},
                         task_grid={"bpc": {"languages": ["en", "vi", "ar"]}}, **spec)
    r = run_xlp("launch", by_text, "--quiet")
    assert r.returncode == 0, r.stderr

    def bpc(run):
        rows = pd.read_parquet(run / "results" / "probes.parquet")
        return rows.pivot(index="step", columns="src_lang", values="value")

    from_ud, from_text = bpc(tmp_path / "ud"), bpc(tmp_path / "text-run")
    assert sorted(from_text.columns) == ["ar", "en", "vi"] and len(from_text) == 3
    assert np.allclose(from_text[["en", "vi"]], from_ud[["en", "vi"]], rtol=1e-9, atol=0)
    assert np.isfinite(from_text["ar"]).all()

    (text / "vi.txt").write_bytes("Một câu.\n".encode() + b"\xff\xfe broken\n")
    r = run_xlp("validate", by_text)
    assert r.returncode == 1 and f"{text / 'vi.txt'}:2: not UTF-8" in r.stderr and "Traceback" not in r.stderr
