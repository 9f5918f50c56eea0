import csv

import pytest
from conftest import UD

from xlp.errors import XlpError
from xlp.tasks.ud import find_treebank, read_conllu


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
    assert ":3:" in str(e.value) or expect.startswith("HEAD")


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


def test_cycle_is_refused(tmp_path):
    f = tmp_path / "xx_cyc-ud-test.conllu"
    f.write_text("# sent_id = c\n1\tA\ta\tX\t_\t_\t0\troot\t_\t_\n2\tB\tb\tX\t_\t_\t3\tdep\t_\t_\n"
                 "3\tC\tc\tX\t_\t_\t2\tdep\t_\t_\n\n")
    with pytest.raises(XlpError, match=r"cycle"):
        read_conllu(f)


def test_lenient_mode_skips_and_reports_malformed_sentences(tmp_path):
    from conftest import MINILM, write_spec

    from xlp.orchestrator.plan import make_plan
    from xlp.spec import load_spec

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

    from xlp.orchestrator.plan import make_plan
    from xlp.spec import load_spec

    spec = write_spec(tmp_path / "s.yaml", name="same", output=str(tmp_path / "run"),
                      checkpoints=[{"path": str(MINILM), "step": 0}], tasks=["pos"], layers=[1],
                      data={"ud_root": "${XLP_SHARED}/ud", "languages": ["en"], "test_split": "dev"})
    with pytest.raises(XlpError, match="en would train and test its probes on the same split"):
        make_plan(load_spec(spec))
