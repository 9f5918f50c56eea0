"""Fuzzing the two readers of user input: whatever the bytes, the answer is sentences / a spec or a
clear XlpError naming the file (never another exception, never a traceback)."""

import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xlp.data.conllu import read_conllu
from xlp.errors import XlpError
from xlp.run.manifest import load_manifest as load_spec

FIELD = st.one_of(st.sampled_from(["_", "0", "1", "2", "3", "-1", "1-2", "2.1", "x", "NOUN", "root", "nsubj:pass"]),
                  st.text(max_size=4))
TOKEN_LINE = st.lists(FIELD, min_size=8, max_size=11).map("\t".join)
LINE = st.one_of(TOKEN_LINE, st.sampled_from(["", "# text = a b", "# sent_id = 1", "\ufeff# x"]), st.text(max_size=12))
ENDINGS = st.sampled_from(["\n", "\r\n"])


@st.composite
def sentence_lines(draw) -> list[str]:
    """A valid sentence (word 1 is the root, the others hang from it), then a few fields mutated."""
    n = draw(st.integers(1, 5))
    rows = [[str(i), f"w{i}", "_", "NOUN", "_", "_", "0" if i == 1 else "1", "root" if i == 1 else "dep", "_", "_"]
            for i in range(1, n + 1)]
    for _ in range(draw(st.integers(0, 2))):
        rows[draw(st.integers(0, n - 1))][draw(st.integers(0, 9))] = draw(FIELD)
    if draw(st.booleans()):  # a HEAD anywhere from the root to past the last word (a self-loop, a cycle)
        rows[draw(st.integers(0, n - 1))][6] = str(draw(st.integers(0, n + 2)))
    return ["# text = " + " ".join(r[1] for r in rows), *("\t".join(r) for r in rows), ""]


DOCUMENT = st.lists(st.one_of(sentence_lines(), st.lists(LINE, max_size=3)), max_size=6).map(
    lambda parts: [line for part in parts for line in part])
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _write(data: bytes) -> Path:
    f = tempfile.NamedTemporaryFile(suffix=".conllu", delete=False)
    f.write(data)
    f.close()
    return Path(f.name)


@FAST
@given(DOCUMENT, ENDINGS, st.booleans())
def test_conllu_reader_answers_sentences_or_a_located_error(lines, ending, garble):
    data = ending.join(lines).encode("utf-8", "surrogatepass")
    if garble:
        data = data[: len(data) // 2] + b"\xff\xfe" + data[len(data) // 2:]
    path = _write(data)
    strict, error = None, None
    try:
        strict = read_conllu(path)
        for s in strict:
            assert len(s.forms) == len(s.upos) == len(s.heads) and s.forms
    except XlpError as e:
        error = str(e)
        assert str(path) in error
        if m := re.match(rf"{re.escape(str(path))}:(\d+): HEAD (\d+) of word (\d+)", error):
            cols = data.decode("utf-8-sig").split("\n")[int(m[1]) - 1].rstrip("\r").split("\t")
            assert cols[0] == m[3] and cols[6] == m[2]  # the line named is the word's own
    skipped = []
    try:  # lenient: bad sentences are skipped and reported, the rest is read
        lenient = read_conllu(path, lenient=True, skipped=skipped)
    except XlpError as e:  # only a file that cannot be read at all, which strict refuses the same way
        assert str(e) == error and re.search(r"UTF-8|cannot read", str(e))
    else:
        if strict is not None:  # nothing malformed: the same sentences, none skipped
            assert lenient == strict and skipped == []
        else:  # the sentence strict stopped at is skipped, with strict's own message
            assert skipped and skipped[0] == error
            assert all(s.forms and len(s.forms) == len(s.upos) == len(s.heads) for s in lenient)
    finally:
        path.unlink()


SPEC_KEYS = st.sampled_from(["name", "output", "checkpoints", "data", "tasks", "layers", "probe", "cluster",
                             "pooling", "ud_root", "languages", "seeds", "path", "bogus"])
SPEC_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=6),
                                     st.sampled_from(["${HOME}", "${XLP_NOPE}", "all", "pos", "en"])),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(SPEC_KEYS, inner, max_size=4)), max_leaves=12)


def _spec_or_located_error(data: bytes) -> None:
    path = _write(data)
    try:
        load_spec(path)
    except XlpError as e:
        assert str(path) in str(e)
    finally:
        path.unlink()


@FAST
@given(st.dictionaries(SPEC_KEYS, SPEC_VALUES, max_size=6))
def test_spec_loader_answers_a_spec_or_a_located_error(doc):
    import yaml

    _spec_or_located_error(yaml.safe_dump(doc, allow_unicode=True).encode())


@FAST
@given(st.binary(max_size=200))
def test_spec_loader_on_arbitrary_bytes(data):
    _spec_or_located_error(data)
