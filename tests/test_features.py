"""Features stored in Parquet equal the hidden states transformers gives for the same words."""

import numpy as np
import pytest
import torch
from conftest import MINILM, UD, make_tiny_xlmr
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

from xlp.data.conllu import read_conllu
from xlp.errors import XlpError
from xlp.models.checkpoints import Checkpoint
from xlp.models.extract import FeatureExtractor
from xlp.storage import Store
from xlp.storage.features import PARQUET_OPTIONS, features_table, layer_stack, shard_path, vectors


def _reference(model, tok, words, layer, pooling):
    enc = tok(words, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc, output_hidden_states=True).hidden_states[layer][0]
    wid = enc.word_ids()
    out = []
    for w in range(len(words)):
        idx = [i for i, x in enumerate(wid) if x == w]
        out.append({"first": h[idx[0]], "last": h[idx[-1]], "mean": h[idx].mean(0)}[pooling])
    return torch.stack(out).numpy()


@pytest.mark.parametrize("pooling", ["first", "mean", "last"])
def test_parquet_features_equal_transformers_hidden_states(tmp_path, pooling):
    sents = read_conllu(UD / "UD_German-GSD" / "de_gsd-ud-test.conllu", max_sentences=60)
    ex = FeatureExtractor(Checkpoint(0, str(MINILM)), layers=[0, 2, 4], pooling=pooling, batch_tokens=600,
                          precision="float32")
    assert len(ex.model.encoder.layer) == 4  # nothing above the highest requested layer is computed
    store = Store(str(tmp_path))
    table = features_table(sents, ex.extract([s.forms for s in sents]))
    store.write_table(shard_path(0, "de", "test"), table, **PARQUET_OPTIONS)
    back = store.read_table(shard_path(0, "de", "test"))
    assert back.column("form").to_pylist() == [f for s in sents for f in s.forms]

    tok, model = AutoTokenizer.from_pretrained(MINILM), AutoModel.from_pretrained(MINILM).eval()
    offsets = np.cumsum([0] + [len(s.forms) for s in sents])
    for k in (0, 17, 59):  # sentences of different lengths land in different padded batches
        for layer in (0, 2, 4):
            ref = _reference(model, tok, sents[k].forms, layer, pooling)
            got = vectors(back, f"layer_{layer}")[offsets[k]:offsets[k + 1]]
            np.testing.assert_allclose(got, ref.astype(np.float16).astype(np.float32), rtol=2e-3, atol=2e-3)


def test_long_sentence_is_split_not_truncated():
    ex = FeatureExtractor(Checkpoint(0, str(MINILM)), layers=[1], precision="float32")
    ex.max_len = 16  # force windows
    words = [f"w{i}ord" for i in range(40)]
    vecs = ex.extract([words])[1]
    assert vecs.shape == (40, 384)
    assert (np.abs(vecs).sum(1) > 0).all()


def test_long_text_vector_is_the_mean_over_every_window():
    """A text longer than the model's window: its sentence vector is the mean over the tokens of every
    window (computed here window by window with transformers), so the tail of a paragraph counts."""
    ex = FeatureExtractor(Checkpoint(0, str(MINILM)), layers=[2], precision="float32")
    ex.max_len = 12  # windows of 10 subwords between [CLS] and [SEP]
    long = " ".join(s.text for s in read_conllu(UD / "UD_English-EWT" / "en_ewt-ud-dev.conllu", max_sentences=3))
    short = "A short one."
    got = ex.sentence_means([long, short])[2]
    tok, model = AutoTokenizer.from_pretrained(MINILM), AutoModel.from_pretrained(MINILM).eval()

    def window_sum(ids):
        with torch.no_grad():
            ids = [tok.cls_token_id, *ids, tok.sep_token_id]
            return model(torch.tensor([ids]), output_hidden_states=True).hidden_states[2][0, 1:-1].sum(0).numpy()

    for text, vec in ((long, got[0]), (short, got[1])):
        ids = tok(text, add_special_tokens=False).input_ids
        want = sum(window_sum(ids[k: k + 10]) for k in range(0, len(ids), 10)) / len(ids)
        np.testing.assert_allclose(vec, want, rtol=1e-4, atol=1e-5)
    assert len(tok(long, add_special_tokens=False).input_ids) > 30  # four windows or more


def test_out_of_memory_retries_with_smaller_batches(monkeypatch):
    """A device that cannot hold a batch of more than 600 tokens: the batches are halved until they
    fit and the word features and sentence vectors are the same; a single sequence that does not fit
    is a clear error."""
    sents = [s.forms for s in read_conllu(UD / "UD_English-EWT" / "en_ewt-ud-dev.conllu", max_sentences=80)]
    texts = [" ".join(s) for s in sents]
    ckpt = Checkpoint(step=0, location=str(MINILM))
    roomy = FeatureExtractor(ckpt, [2], batch_tokens=4096, precision="float32")
    plain, plain_means = roomy.extract(sents), roomy.sentence_means(texts)
    monkeypatch.setenv("XLP_OOM_ABOVE_TOKENS", "600")
    small = FeatureExtractor(ckpt, [2], batch_tokens=4096, precision="float32")
    np.testing.assert_allclose(small.extract(sents)[2].astype(np.float32), plain[2].astype(np.float32),
                               rtol=2e-3, atol=2e-3)  # other batch compositions: float16 rounding
    assert small.oom_retries > 0 and small.batch_tokens < 4096
    small = FeatureExtractor(ckpt, [2], batch_tokens=4096, precision="float32")
    np.testing.assert_allclose(small.sentence_means(texts)[2], plain_means[2], rtol=1e-4, atol=1e-5)
    assert small.oom_retries > 0 and small.batch_tokens < 4096
    monkeypatch.setenv("XLP_OOM_ABOVE_TOKENS", "5")
    with pytest.raises(XlpError, match="out of memory on a single sequence"):
        FeatureExtractor(ckpt, [2], precision="float32").extract(sents)
    with pytest.raises(XlpError, match="out of memory on a single sequence"):
        FeatureExtractor(ckpt, [2], precision="float32").sentence_means(texts)


def test_float32_features_are_not_float16_rounded():
    """`feature_dtype: float32` stores what the model computed, not float16 values at twice the size."""
    ex = FeatureExtractor(Checkpoint(0, str(MINILM)), layers=[2], precision="float32")
    sents = [s.forms for s in read_conllu(UD / "UD_English-EWT" / "en_ewt-ud-dev.conllu", max_sentences=5)]
    f32, f16 = ex.extract(sents, "float32")[2], ex.extract(sents)[2]
    assert f32.dtype == np.float32 and f16.dtype == np.float16
    assert not np.array_equal(f32, f32.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(f16.astype(np.float32), f32, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_shard_vectors_read_back_bit_exact_through_filters_and_as_earlier_list_shards(tmp_path, dtype):
    """A shard stores each vector as raw bytes: a written, filtered and sliced shard gives back exactly the
    vectors written, and a shard of an earlier version (vectors as Parquet lists) gives the same matrix."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sents = read_conllu(UD / "UD_English-EWT" / "en_ewt-ud-dev.conllu", max_sentences=20)
    n = sum(len(s.forms) for s in sents)
    vecs = {layer: np.random.default_rng(layer).standard_normal((n, 24)).astype(dtype) for layer in (3, 5)}
    pq.write_table(features_table(sents, vecs, dtype), tmp_path / "s.parquet", **PARQUET_OPTIONS)
    table = pq.read_table(tmp_path / "s.parquet", columns=["layer_3", "sent_idx", "layer_5"])
    assert np.array_equal(vectors(table, "layer_3"), vecs[3].astype(np.float32))
    keep = table.column("sent_idx").to_numpy() % 3 == 1
    assert np.array_equal(vectors(table.filter(pa.array(keep)).slice(4), "layer_3"), vecs[3][keep][4:])
    assert vectors(table.slice(0, 0), "layer_3").shape == (0, 24)
    lists = pa.FixedSizeListArray.from_arrays(pa.array(vecs[3].reshape(-1)), 24)
    assert np.array_equal(vectors(table.set_column(0, "layer_3", lists), "layer_3"), vectors(table, "layer_3"))
    # several layers at once, each converted into its place: the same as stacking each layer's matrix
    part = table.filter(pa.array(keep)).slice(4)
    for t in (table, part, table.set_column(0, "layer_3", lists), table.slice(0, 0)):
        stacked = layer_stack(t, ["layer_5", "layer_3"])
        assert stacked.dtype == np.float32
        assert np.array_equal(stacked, np.stack([vectors(t, "layer_5"), vectors(t, "layer_3")]))


def test_a_lone_sentencepiece_space_is_not_the_words_vector(tmp_path):
    """XLM-R writes most Chinese words as a lone "▁" and then the word's pieces. The "▁" is read by the model but is
    no word's: under first pooling a word is its first own piece (not the "▁", which would give every such word the
    same embedding), under mean pooling the mean of its own pieces; a window never ends on a "▁"."""
    ckpt = make_tiny_xlmr(tmp_path / "xlmr", seed=0, layers=1)
    words = ["我们", "在", "北京", "工作", "上海", "。"]
    tok, model = AutoTokenizer.from_pretrained(ckpt), AutoModelForMaskedLM.from_pretrained(ckpt).eval()
    ids = tok(" ".join(words))["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces.count("▁") >= 3  # 北京, 工作 and 上海 each follow a lone "▁"
    with torch.no_grad():
        h = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    own = [[i for i, p in enumerate(pieces) if p.lstrip("▁") and p.lstrip("▁") in w] for w in words]
    for pooling, pick in (("first", lambda t, i: t[i[0]]), ("mean", lambda t, i: t[i].mean(0))):
        got = FeatureExtractor(Checkpoint(0, str(ckpt)), layers=[0, 1], pooling=pooling,
                               precision="float32").extract([words], "float32")
        for layer in (0, 1):
            want = torch.stack([pick(h[layer][0], i) for i in own]).numpy()
            np.testing.assert_allclose(got[layer], want, rtol=1e-4, atol=1e-5)
        assert len({tuple(np.round(v, 4)) for v in got[0]}) == len(words)
    ex = FeatureExtractor(Checkpoint(0, str(ckpt)), layers=[1], precision="float32")
    ex.max_len = 5  # windows of 3 tokens between <s> and </s>
    for ids_window in ex.input_ids(words):
        assert tok.convert_ids_to_tokens(ids_window[-2]) != "▁"


def test_bfloat16_features_stay_within_a_percent_of_float32_and_probe_as_well():
    """precision: bfloat16 (what `auto` picks on a GPU and on a CPU with native bfloat16) gives features that
    differ from float32's, by well under 1 % (median relative difference), and POS probes on them score within
    one point."""
    from xlp.probing.linear import fit_probes

    ckpt = Checkpoint(0, str(MINILM))
    train = read_conllu(UD / "UD_English-EWT" / "en_ewt-ud-dev.conllu", max_sentences=100)
    test = read_conllu(UD / "UD_English-EWT" / "en_ewt-ud-test.conllu", max_sentences=60)
    accuracy, features = {}, {}
    for precision in ("float32", "bfloat16"):
        ex = FeatureExtractor(ckpt, layers=[2, 4], precision=precision)
        assert ex.precision == precision
        X, Xt = ({layer: v.astype(np.float32) for layer, v in ex.extract([s.forms for s in part]).items()}
                 for part in (train, test))
        features[precision] = X
        probes = fit_probes(np.stack([X[2], X[4]]), np.array([t for s in train for t in s.upos]))
        accuracy[precision] = probes.accuracy(np.stack([Xt[2], Xt[4]]), np.array([t for s in test for t in s.upos]))
    for layer in (2, 4):
        a, b = features["float32"][layer], features["bfloat16"][layer]
        rel = np.median(np.abs(a - b) / (np.abs(a) + 1e-3))
        assert 0 < rel < 0.01, (layer, rel)  # measured 0.3-0.5 %: bfloat16 did run, and stayed close
    assert np.abs(accuracy["bfloat16"] - accuracy["float32"]).max() <= 0.01, accuracy


def test_a_stored_table_reads_back_as_parquet_reads_it_and_a_missing_column_is_named(tmp_path):
    """Store.read_table reads one file without Arrow's dataset machinery (0.2 s of imports a process): the same
    columns, values and schema metadata as pyarrow's reader, checked or not; a column the file lacks is an error
    that names the file and the column (pyarrow's file reader would leave it out)."""
    import subprocess
    import sys

    import pyarrow.parquet as pq

    sents = read_conllu(UD / "UD_English-EWT" / "en_ewt-ud-dev.conllu", max_sentences=20)
    n = sum(len(s.forms) for s in sents)
    vecs = {layer: np.random.default_rng(layer).standard_normal((n, 24)).astype(np.float16) for layer in (3, 5)}
    store = Store(str(tmp_path))
    written = store.write_table("s.parquet", features_table(sents, vecs, "float16"), **PARQUET_OPTIONS)
    cols = ["layer_5", "upos", "sent_idx"]
    plain = pq.read_table(tmp_path / "s.parquet", columns=cols)
    for sha256 in (None, written.sha256):
        table = store.read_table("s.parquet", columns=cols, sha256=sha256)
        assert table.equals(plain) and table.schema.equals(plain.schema, check_metadata=True)
    assert store.read_table("s.parquet").equals(pq.read_table(tmp_path / "s.parquet"))
    with pytest.raises(XlpError, match=r"s\.parquet: no column layer_4"):
        store.read_table("s.parquet", columns=["layer_4", "upos"], sha256=written.sha256)
    code = ("import sys; from xlp.storage import Store; Store(sys.argv[1]).read_table('s.parquet', ['upos']); "
            "print('pyarrow.dataset' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          check=True).stdout == "False\n"
