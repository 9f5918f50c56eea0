import csv

import pytest
from conftest import UD

from xlp.data.conllu import find_treebank, read_conllu
from xlp.errors import XlpError


def test_word_counts_match_the_release_manifest():
    """Every shared file reads to exactly the manifest's sentences and syntactic words
    (multiword ranges and empty nodes skipped)."""
    with open(UD / "MANIFEST.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        sents = read_conllu(UD / row["treebank"] / row["file"])
        assert len(sents) == int(row["sentences"]), row["file"]
        assert sum(len(s.forms) for s in sents) == int(row["tokens"]), row["file"]


def test_sentence_fields_and_cap():
    sents = read_conllu(UD / "UD_English-EWT" / "en_ewt-ud-test.conllu", max_sentences=3)
    assert len(sents) == 3
    s = sents[0]
    assert s.text == "What if Google Morphed Into GoogleOS?"
    assert s.forms[:3] == ["What", "if", "Google"]
    assert s.upos[0] == "PRON" and s.heads[0] == 0 and s.deprels[0] == "root"
    assert len(s.forms) == len(s.upos) == len(s.heads) == len(s.deprels)


@pytest.mark.parametrize("bad_line, expect", [
    ("1\tThe\tthe\tDET\tDT\t_\t2\tdet\t_", "expected 10 tab-separated columns"),
    ("x\tThe\tthe\tDET\tDT\t_\t2\tdet\t_\t_", "not an integer"),
    ("1\tThe\tthe\tDET\tDT\t_\t9\tdet\t_\t_", "HEAD 9"),
])
def test_malformed_file_names_file_and_line(tmp_path, bad_line, expect):
    f = tmp_path / "xx_bad-ud-test.conllu"
    f.write_text("# sent_id = a\n# text = The cat\n" + bad_line + "\n2\tcat\tcat\tNOUN\tNN\t_\t0\troot\t_\t_\n\n")
    with pytest.raises(XlpError) as e:
        read_conllu(f)
    assert str(f) in str(e.value) and expect in str(e.value)
    assert f"{f}:3:" in str(e.value)  # the bad word's own line, whatever the error


def test_word_errors_name_the_word_line_and_sentence_errors_the_first_line_and_id(tmp_path):
    ok = "# sent_id = ok\n1\tHi\thi\tINTJ\t_\t_\t0\troot\t_\t_\n\n"  # lines 1-3

    def error(sentence: str) -> str:
        f = tmp_path / "xx_t-ud-test.conllu"
        f.write_text(ok + sentence)  # the second sentence starts on line 4, its words on 6, 7, 8
        with pytest.raises(XlpError) as e:
            read_conllu(f)
        assert str(e.value).startswith(f"{f}:")
        return str(e.value).removeprefix(f"{f}:")

    def rows(*heads: int) -> str:
        return "".join(f"{i}\tw{i}\t_\tX\t_\t_\t{h}\tdep\t_\t_\n" for i, h in enumerate(heads, 1))

    head = "# sent_id = s2\n# text = a b c\n"
    assert error(head + rows(0, 1, 7) + "\n").startswith("8: HEAD 7 of word 3 is out of range")
    assert error(head + rows(0, 2, 1) + "\n").startswith("7: word 2 of sentence 's2' is its own HEAD")
    assert error(head + rows(2, 3, 1) + "\n").startswith("4: sentence 's2' has no root")
    message = error(head + rows(0, 3, 2) + "\n")
    assert message.startswith("4: sentence 's2'") and "[2, 3] form a cycle" in message


def test_bom_and_crlf_are_read(tmp_path):
    f = tmp_path / "xx_ok-ud-test.conllu"
    f.write_bytes("\ufeff# text = Hi\r\n1\tHi\thi\tINTJ\t_\t_\t0\troot\t_\t_\r\n\r\n".encode())
    [s] = read_conllu(f)
    assert s.forms == ["Hi"] and s.deprels == ["root"]


def test_treebank_choice_and_dev_fallback():
    en = find_treebank(UD, "en")
    assert en.name == "UD_English-EWT"  # the main treebank, not the test-only PUD
    assert en.split_file("train", fallback="dev")[0] == "dev"
    assert find_treebank(UD, "en", "UD_English-PUD").split_file("train", fallback="dev") is None
    assert find_treebank(UD, "ar").name == "UD_Arabic-PUD"
    with pytest.raises(XlpError, match="no CoNLL-U files for 'xx'"):
        find_treebank(UD, "xx")


def test_treebanks_are_found_through_directory_links_and_a_link_cycle_ends(tmp_path):
    """A UD root that is itself a link, treebank folders that are links (and a second link to one of
    them), a folder of linked files, and a link back up to the root: every treebank is found once."""
    from xlp.data.conllu import conllu_files
    from xlp.tasks.retrieval import parallel_pud

    real = tmp_path / "mine"
    real.mkdir()
    (real / "UD_English-EWT").symlink_to(UD / "UD_English-EWT", target_is_directory=True)
    (real / "UD_English-PUD").symlink_to(UD / "UD_English-PUD", target_is_directory=True)
    (real / "more").mkdir()
    (real / "more" / "ewt-again").symlink_to(real / "UD_English-EWT", target_is_directory=True)
    (real / "more" / "up").symlink_to(real, target_is_directory=True)  # a cycle
    gsd = real / "UD_French-GSD"
    gsd.mkdir()
    for f in (UD / "UD_French-GSD").glob("*.conllu"):
        (gsd / f.name).symlink_to(f)
    (real / "UD_Finnish-PUD").symlink_to(UD / "UD_Finnish-PUD", target_is_directory=True)
    root = tmp_path / "ud"
    root.symlink_to(real, target_is_directory=True)

    en = find_treebank(root, "en")
    assert en.name == "UD_English-EWT" and set(en.splits) == set(find_treebank(UD, "en").splits)
    assert find_treebank(root, "en", "UD_English-PUD").splits["test"].name == "en_pud-ud-test.conllu"
    fr = find_treebank(root, "fr")
    assert fr.folder == root / "UD_French-GSD" and set(fr.splits) == set(find_treebank(UD, "fr").splits)
    def pud(ud_root):  # as the retrieval task finds them
        return parallel_pud({lang: conllu_files(ud_root, f"{lang}_pud-ud-test.conllu")[0] for lang in ("en", "fi")},
                            ["en", "fi"], cap=5)

    texts = pud(root)
    assert texts == pud(UD) and len(texts["fi"]) == 5


def test_an_empty_test_file_is_refused_before_any_unit_runs(tmp_path):
    from conftest import MINILM, run_xlp, write_spec

    from xlp.config import load_spec
    from xlp.run.plan import make_plan

    tb = tmp_path / "ud" / "UD_Xx-Empty"
    tb.mkdir(parents=True)
    (tb / "xx_empty-ud-train.conllu").write_text("1\tHi\thi\tINTJ\t_\t_\t0\troot\t_\t_\n\n")
    empty = tb / "xx_empty-ud-test.conllu"
    empty.write_text("# a comment, no sentence\n\n")
    out = tmp_path / "run"
    spec = write_spec(tmp_path / "s.yaml", name="e", output=str(out), checkpoints=[{"path": str(MINILM), "step": 0}],
                      tasks=["pos"], layers=[1], data={"ud_root": str(tmp_path / "ud"), "languages": ["xx"]})
    for command in ("validate", "launch"):
        r = run_xlp(command, spec)
        assert r.returncode != 0 and f"{empty}: no sentence to read" in r.stderr, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
    assert not out.exists() or not any(out.rglob("*.parquet"))  # no unit ran

    empty.write_text("1\tOops\toops\tINTJ\t_\t_\t0\troot\n\n")  # lenient mode skips its only sentence
    lenient = write_spec(tmp_path / "l.yaml", name="l", output=str(out), tasks=["pos"], layers=[1],
                         checkpoints=[{"path": str(MINILM), "step": 0}],
                         data={"ud_root": str(tmp_path / "ud"), "languages": ["xx"], "conllu": "lenient"})
    with pytest.raises(XlpError, match=f"{empty}: no sentence to read: all 1 of its sentences are malformed"):
        make_plan(load_spec(lenient))


def test_cycle_is_refused(tmp_path):
    f = tmp_path / "xx_cyc-ud-test.conllu"
    f.write_text("# sent_id = c\n1\tA\ta\tX\t_\t_\t0\troot\t_\t_\n2\tB\tb\tX\t_\t_\t3\tdep\t_\t_\n"
                 "3\tC\tc\tX\t_\t_\t2\tdep\t_\t_\n\n")
    with pytest.raises(XlpError, match=r"cycle"):
        read_conllu(f)


def test_lenient_mode_skips_and_reports_malformed_sentences(tmp_path):
    from conftest import MINILM, write_spec

    from xlp.config import load_spec
    from xlp.run.plan import make_plan

    tb = tmp_path / "ud" / "UD_Xx-Mixed"
    tb.mkdir(parents=True)
    good = "1\tHi\thi\tINTJ\t_\t_\t0\troot\t_\t_\n2\tyou\tyou\tPRON\t_\t_\t1\tobj\t_\t_\n\n"
    bad = "1\tOops\toops\tINTJ\t_\t_\t0\troot\n\n"
    for split in ("dev", "test"):
        (tb / f"xx_mixed-ud-{split}.conllu").write_text(good + bad + good)
    spec = dict(name="l", output=str(tmp_path / "run"), checkpoints=[{"path": str(MINILM), "step": 0}],
                tasks=["pos"], layers=[1])
    with pytest.raises(XlpError, match=r"xx_mixed-ud-(dev|test).conllu:4"):
        make_plan(load_spec(write_spec(tmp_path / "s.yaml", **spec,
                                       data={"ud_root": str(tmp_path / "ud"), "languages": ["xx"]})))
    plan = make_plan(load_spec(write_spec(tmp_path / "l.yaml", **spec, data={
        "ud_root": str(tmp_path / "ud"), "languages": ["xx"], "conllu": "lenient"})))
    assert plan.words == 2 * 4  # two good sentences of two words, in dev and in test
    assert sum("skipped 1 malformed sentences" in n for n in plan.notes) == 2
    assert read_conllu(tb / "xx_mixed-ud-test.conllu", lenient=True)[1].forms == ["Hi", "you"]


def test_train_and_test_on_the_same_split_is_refused(tmp_path):
    from conftest import MINILM, write_spec

    from xlp.config import load_spec
    from xlp.run.plan import make_plan

    spec = write_spec(tmp_path / "s.yaml", name="same", output=str(tmp_path / "run"),
                      checkpoints=[{"path": str(MINILM), "step": 0}], tasks=["pos"], layers=[1],
                      data={"ud_root": "${XLP_SHARED}/ud", "languages": ["en"], "test_split": "dev"})
    with pytest.raises(XlpError, match="en would train and test its probes on the same split"):
        make_plan(load_spec(spec))
