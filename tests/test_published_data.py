"""Data as the field publishes it (issue 26), in small files written here: gold alignment tokens that are other
Unicode spaces, words a tokenizer gives no subword, train splits published in parts, treebanks published without
their text, and files with a byte-order mark, Windows line ends, no last newline, or in UTF-16."""

import codecs

import numpy as np
import pytest
from conftest import MINILM, run_xlp, write_spec

from xlp.data.alignment import read_gold
from xlp.data.conllu import find_treebank, read_conllu, read_part
from xlp.data.xnli import read_xnli_file
from xlp.errors import XlpError
from xlp.storage.features import vectors
from xlp.tasks.bpc import read_lines

IDEOGRAPHIC_SPACE = "\u3000"
DET, ADJ = ["the", "a", "this"], ["big", "red", "old", "small"]
NOUN, VERB = ["cat", "dog", "bird", "house", "tree"], ["sees", "likes", "finds"]


def words(k: int, extra: str | None = None) -> list[tuple[str, str, int, str]]:
    """Sentence k of a tiny grammar, DET ADJ NOUN VERB DET NOUN (the verb the root), as (form, UPOS, head,
    relation); `extra` is a last word hanging from the verb."""
    rows = [(DET[k % 3], "DET", 3, "det"), (ADJ[k % 4], "ADJ", 3, "amod"), (NOUN[k % 5], "NOUN", 4, "nsubj"),
            (VERB[k % 3], "VERB", 0, "root"), (DET[(k + 1) % 3], "DET", 6, "det"),
            (NOUN[(k + 2) % 5], "NOUN", 4, "obj")]
    return rows + [(extra, "SYM", 4, "dep")] if extra else rows


def conllu(sentences: list[list[tuple[str, str, int, str]]], prefix: str) -> str:
    blocks = []
    for i, rows in enumerate(sentences):
        lines = [f"# sent_id = {prefix}{i}", "# text = " + " ".join(r[0] for r in rows)]
        lines += [f"{j}\t{form}\t_\t{upos}\t_\t_\t{head}\t{rel}\t_\t_"
                  for j, (form, upos, head, rel) in enumerate(rows, 1)]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks) + "\n"


def windows_bytes(text: str) -> bytes:
    """The same text as a Windows editor saves it: a UTF-8 byte-order mark, CRLF, no newline after the last line."""
    return codecs.BOM_UTF8 + text.rstrip("\n").replace("\n", "\r\n").encode()


# the KFTT Japanese-English layout: tokens split by ASCII spaces, one of them the ideographic space
JA_EN = f"私 は {IDEOGRAPHIC_SPACE} 東京 に 行った ||| I went to Tokyo\n  猫\u00a0が   見る  ||| a  cat sees \n"
JA_EN_GOLD = "1-1 6-2 4-4 3p3\n1-2 2-3 1p1\n"


def test_gold_tokens_are_split_at_ascii_spaces_only(tmp_path):
    """A token may be another Unicode space (U+3000) or hold one (U+00A0): only ASCII spaces separate tokens,
    runs of them and leading or trailing ones included, so the links count the words the gold set counts and
    pre-flight takes the set."""
    gold = tmp_path / "gold"
    gold.mkdir()
    (gold / "jaen.src-tgt").write_text(JA_EN, encoding="utf-8")
    (gold / "jaen.gold").write_text(JA_EN_GOLD, encoding="utf-8")
    first, second = read_gold(gold / "jaen.src-tgt", gold / "jaen.gold")
    assert first.src == ("私", "は", IDEOGRAPHIC_SPACE, "東京", "に", "行った")
    assert first.possible - first.sure == {(2, 2)}  # the link to the ideographic space
    assert second.src == ("猫\u00a0が", "見る") and second.tgt == ("a", "cat", "sees")
    spec = write_spec(tmp_path / "s.yaml", name="ja", output=str(tmp_path / "run"), checkpoints=[{"path": str(MINILM)}],
                      data={"ud_root": "${XLP_SHARED}/ud", "languages": ["en"]}, tasks=["align"],
                      align={"gold": str(gold), "pairs": ["jaen"]})
    r = run_xlp("validate", spec)
    assert r.returncode == 0, r.stderr


def test_a_word_without_subwords_is_read_as_the_unknown_token():
    """U+3000, a zero-width joiner, a soft hyphen and a control character give MiniLM's WordPiece no subword:
    each is read as [UNK] in its place (the vectors equal those of the sentence with [UNK] written there, under
    every pooling, so no neighbour shifts), no vector is zero, and the words are counted; a text with no subword
    (a sentence vector) likewise."""
    from xlp.models.checkpoints import Checkpoint
    from xlp.models.extract import FeatureExtractor
    from xlp.models.words import NO_SUBWORD

    odd = [["Hello", IDEOGRAPHIC_SPACE, "world"], ["a", "\u200d", "b", "\u00ad", "\x01"], [IDEOGRAPHIC_SPACE]]
    spelled = [["[UNK]" if w in (IDEOGRAPHIC_SPACE, "\u200d", "\u00ad", "\x01") else w for w in s] for s in odd]
    for pooling in ("first", "mean", "last"):
        ex = FeatureExtractor(Checkpoint(0, str(MINILM)), layers=[0, 6], pooling=pooling, precision="float32")
        before = NO_SUBWORD.copy()
        got, want = ex.extract(odd, dtype="float32"), ex.extract(spelled, dtype="float32")
        assert NO_SUBWORD - before == {("words", "[UNK]"): 5}
        for layer in (0, 6):
            assert np.array_equal(got[layer], want[layer]) and (np.abs(got[layer]).sum(1) > 0).all()
    means = ex.sentence_means([IDEOGRAPHIC_SPACE, "[UNK]"])
    assert np.allclose(means[6][0], means[6][1], atol=1e-5) and np.abs(means[6][0]).sum() > 0
    assert NO_SUBWORD["texts", "[UNK]"] >= 1


def _treebank(root, folder, files: dict[str, bytes | str]):
    (root / folder).mkdir(parents=True)
    for name, content in files.items():
        (root / folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())


def test_a_train_split_in_parts_is_read_as_one(tmp_path, tiny_series):
    """A train split published as -a, -b, -c parts is one split read in file-name order, the cap counted across
    the parts; pre-flight reads and hashes every part (a change in the last one changes the extraction unit) and
    says so in its notes; a split in one file keeps its one-file form, so the hashes of such runs stay."""
    from xlp.config import load_spec
    from xlp.hashing import DataFile
    from xlp.run.plan import make_plan

    ud = tmp_path / "ud"
    parts = {f"xx_big-ud-train-{p}.conllu": conllu([words(k) for k in range(n)], f"{p}-") for p, n in
             (("c", 5), ("a", 3), ("b", 4))}
    _treebank(ud, "UD_Xx-Big", {**parts, "xx_big-ud-test.conllu": conllu([words(k) for k in range(3)], "t")})
    tb = find_treebank(ud, "xx")
    assert [p.name for p in tb.split_file("train")[1]] == sorted(parts)
    ids = [s.sent_id for s in read_part(tb.splits["train"], 5, False, None)]
    assert ids == ["a-0", "a-1", "a-2", "b-0", "b-1"]
    assert len(read_part(tb.splits["train"], None, False, None)) == 12

    def extract_units():
        spec = write_spec(tmp_path / "s.yaml", name="p", output=str(tmp_path / "run"),
                          checkpoints=[{"path": f"{tiny_series}/step_0"}], tasks=["pos"], layers=[0],
                          data={"ud_root": str(ud), "languages": ["xx"], "max_train_sentences": 10})
        plan = make_plan(load_spec(spec))
        return plan, {u.split: u for u in plan.extract}

    plan, units = extract_units()
    assert [f.path for f in units["train"].file] == [str(ud / "UD_Xx-Big" / name) for name in sorted(parts)]
    assert isinstance(units["test"].file, DataFile)
    assert plan.words == 10 * 6 + 3 * 6
    assert any("3 parts" in note for note in plan.notes)
    (ud / "UD_Xx-Big" / "xx_big-ud-train-c.conllu").write_text(parts["xx_big-ud-train-c.conllu"] + "\n")
    changed = extract_units()[1]
    assert changed["train"].hash != units["train"].hash and changed["test"].hash == units["test"].hash


def test_a_treebank_published_without_its_text_is_refused(tmp_path):
    """Every FORM `_` (UD_English-GUMReddit, UD_Japanese-BCCWJ as released): pre-flight names the treebank and
    says to restore its text with the treebank's own script, instead of probing on underscores."""
    hidden = [[("_", upos, head, rel) for _, upos, head, rel in words(k)] for k in range(4)]
    ud = tmp_path / "ud"
    _treebank(ud, "UD_Xx-Hidden", {f"xx_hidden-ud-{s}.conllu": conllu(hidden, s) for s in ("train", "test")})
    spec = write_spec(tmp_path / "s.yaml", name="h", output=str(tmp_path / "run"), checkpoints=[{"path": str(MINILM)}],
                      data={"ud_root": str(ud), "languages": ["xx"]}, tasks=["pos"])
    r = run_xlp("validate", spec)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    message = " ".join(r.stderr.split())
    assert "UD_Xx-Hidden" in message and "without its text" in message and "own script" in message


CONLLU = conllu([words(0), words(1, IDEOGRAPHIC_SPACE)], "s")
XNLI = "language\tgold_label\tsentence1\tsentence2\nen\tneutral\tA cat.\tA dog.\nfr\tentailment\tUn chat.\tUn chat.\n"
TEXT = "A first line.\n\nA second one.\n"
READERS = {  # what each reader makes of a file: comparable values
    "conllu": (CONLLU, lambda p: [(s.sent_id, s.text, s.forms, s.upos, s.heads) for s in read_conllu(p)]),
    "src-tgt": (JA_EN, None),
    "gold": (JA_EN_GOLD, None),
    "xnli": (XNLI, lambda p: {k: (a, b, list(c)) for k, (a, b, c) in read_xnli_file(p, None, None).items()}),
    "bpc": (TEXT, lambda p: read_lines(p, None)),
}


def _read(folder, kind):
    if kind in ("src-tgt", "gold"):
        return read_gold(folder / "jaen.src-tgt", folder / "jaen.gold")
    return READERS[kind][1](folder / kind)


def _write(folder, kind, data: bytes):
    folder.mkdir(exist_ok=True)
    (folder / ("jaen." + kind if kind in ("src-tgt", "gold") else kind)).write_bytes(data)
    for other in ("src-tgt", "gold"):  # the other file of a gold pair, as plain UTF-8
        if kind in ("src-tgt", "gold") and not (folder / f"jaen.{other}").exists():
            (folder / f"jaen.{other}").write_bytes(READERS[other][0].encode())


@pytest.mark.parametrize("kind", list(READERS))
def test_bom_crlf_and_no_last_newline_read_as_the_same_data_and_utf16_is_refused(tmp_path, kind):
    """CoNLL-U, gold alignment files (sentences and links), XNLI's TSV and bpc's text files: a byte-order mark,
    Windows line ends and a last line without its newline read as the same data; UTF-16, with or without its
    byte-order mark, is refused naming the file and line."""
    text = READERS[kind][0]
    _write(tmp_path / "unix", kind, text.encode())
    _write(tmp_path / "windows", kind, windows_bytes(text))
    assert _read(tmp_path / "windows", kind) == _read(tmp_path / "unix", kind)
    for name, data in (("utf16", text.encode("utf-16")), ("utf16le", text.encode("utf-16-le"))):
        _write(tmp_path / name, kind, data)
        with pytest.raises(XlpError, match="UTF-16") as e:
            _read(tmp_path / name, kind)
        assert f"{tmp_path / name}/" in str(e.value) and ":1: " in str(e.value)


def test_published_data_runs_end_to_end(tmp_path, tiny_series, ray_local):
    """`xlp launch` on a treebank whose train split has three parts and whose test split is a Windows file (a
    byte-order mark, CRLF) with ideographic spaces among its words, and on a gold alignment set with U+3000
    tokens, also in CRLF: POS and align rows at both checkpoints, the train shard drawn from all three parts, the
    words without a subword with real vectors, and the console and the report's notes saying how many there were."""
    import pandas as pd
    import pyarrow.parquet as pq

    ud = tmp_path / "ud"
    train = {f"en_parts-ud-train-{p}.conllu": conllu([words(k + 7 * i) for k in range(15)], f"{p}-")
             for i, p in enumerate("abc")}
    test = conllu([words(k, IDEOGRAPHIC_SPACE if k % 2 else None) for k in range(12)], "t")
    _treebank(ud, "UD_English-Parts", {**train, "en_parts-ud-test.conllu": windows_bytes(test)})
    gold = tmp_path / "gold"
    gold.mkdir()
    (gold / "jaen.src-tgt").write_bytes(windows_bytes(JA_EN))
    (gold / "jaen.gold").write_bytes(windows_bytes(JA_EN_GOLD))
    run = tmp_path / "run"
    spec = write_spec(tmp_path / "s.yaml", name="published", output=str(run),
                      checkpoints=[{"path": f"{tiny_series}/step_{step}"} for step in (0, 200)],
                      tasks=["pos", "align"], layers=[2],
                      data={"ud_root": str(ud), "languages": ["en"], "max_train_sentences": 40,
                            "max_test_sentences": 12},
                      probe={"seeds": [0]}, align={"gold": str(gold), "pairs": ["jaen"]})
    r = run_xlp("launch", spec)
    assert r.returncode == 0, r.stderr
    assert "note: en test: 6 words had no subword and were read as <unk> (at 2 checkpoints)" in r.stderr  # console
    rows = pd.read_parquet(run / "results" / "probes.parquet")
    assert sorted(set(zip(rows.task, rows.src_lang, rows.tgt_lang))) == [("align", "ja", "en"), ("pos", "en", "en")]
    assert len(rows) == 2 * 2 and np.isfinite(rows.value).all()
    shard = run / "features" / "step=0" / "lang=en"
    sent_ids = pq.read_table(shard / "split=train", columns=["sent_id"]).column("sent_id").to_pylist()
    assert {i.split("-")[0] for i in sent_ids} == {"a", "b", "c"} and len(set(sent_ids)) == 40
    words_test = pq.read_table(shard / "split=test")
    spaces = np.flatnonzero(words_test.column("form").to_numpy(zero_copy_only=False) == IDEOGRAPHIC_SPACE)
    assert len(spaces) == 6 and (np.abs(vectors(words_test, "layer_2")[spaces]).sum(axis=1) > 0).all()
    notes = (run / "report" / "index.html").read_text()
    assert "en test: 6 words had no subword and were read as &lt;unk&gt; (at 2 checkpoints)" in notes
    assert "align gold: 1 word had no subword and was read as" in notes and "published in 3 parts" in notes
