"""Every family researchers publish series of: the ids xlp feeds equal the tokenizer's own for the running
text, pooling follows the attention, layers above the highest requested are dropped with features equal
to the full forward, the LM head's kind is told right, and a causal LM's bits per byte are exact."""

import math
from functools import reduce

import numpy as np
import pytest
import torch
from conftest import FAMILIES, GPT_NEOX_TOKENIZER, MINILM, UD, make_tiny_family, make_tiny_xlmr
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from xlp.data.conllu import find_treebank, read_conllu
from xlp.errors import XlpError
from xlp.models.causal_lm import CausalLmScorer
from xlp.models.checkpoints import Checkpoint
from xlp.models.extract import FeatureExtractor
from xlp.models.families import is_causal, layer_stack, model_kind
from xlp.models.words import align, encodings

CAUSAL = [k for k in FAMILIES if k != "modernbert"]
FOX = ["The", "quick", "brown", "fox", "jumped", "over", "the", "lazy", "dog", "."]


@pytest.fixture(scope="session")
def families(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("families")
    return {kind: make_tiny_family(kind, root / kind, seed=i) for i, kind in enumerate(FAMILIES)}


def _sentences() -> list[list[str]]:
    """English, German, Vietnamese (words with spaces inside), Chinese, Arabic and Hindi words."""
    out = [FOX]
    for tb, f, n in (("UD_English-EWT", "en_ewt-ud-test", 150), ("UD_German-GSD", "de_gsd-ud-test", 40),
                     ("UD_Vietnamese-VTB", "vi_vtb-ud-test", 40), ("UD_Chinese-PUD", "zh_pud-ud-test", 20),
                     ("UD_Arabic-PUD", "ar_pud-ud-test", 20), ("UD_Hindi-PUD", "hi_pud-ud-test", 20)):
        out += [s.forms for s in read_conllu(UD / tb / f"{f}.conllu", max_sentences=n)]
    return out


@pytest.fixture(scope="session")
def kinds(families, tmp_path_factory) -> dict:
    """One checkpoint per tokenizer kind: byte-level BPE (GPT-NeoX-20B's, no BOS), SentencePiece (XLM-R's,
    <s> ... </s>), WordPiece (MiniLM's, [CLS] ... [SEP])."""
    return {"bpe": families["gpt_neox"], "sentencepiece": make_tiny_xlmr(tmp_path_factory.mktemp("x") / "x", 0),
            "wordpiece": MINILM}


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece", "wordpiece"])
def test_fed_ids_equal_the_tokenizers_ids_of_the_running_text(kinds, kind):
    ex = FeatureExtractor(Checkpoint(0, str(kinds[kind])), layers=[1], precision="float32")
    tok = AutoTokenizer.from_pretrained(kinds[kind])
    sents = _sentences()
    fits = 0
    for words in sents:
        want = tok(" ".join(words))["input_ids"]
        if len(want) <= ex.max_len:
            assert ex.input_ids(words) == [want], " ".join(words)
            fits += 1
    assert fits > 0.9 * len(sents)
    if kind == "bpe":  # the example: each word keeps its leading space, one token per word here
        assert tok.convert_ids_to_tokens(ex.input_ids(FOX)[0]) == [
            "The", "Ġquick", "Ġbrown", "Ġfox", "Ġjumped", "Ġover", "Ġthe", "Ġlazy", "Ġdog", "Ġ."]
        for words, sent in zip(sents, align(tok, sents)):  # byte-level BPE decodes back to each word exactly
            got = [tok.decode([i for i, lo in zip(sent.ids, sent.lo) if lo == w]).strip()
                   for w in range(len(words))]
            assert got == list(words)


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece", "wordpiece"])
def test_backend_encodings_are_the_tokenizers_own_call(kinds, kind):
    """xlp encodes running texts with the fast tokenizer's backend, not its Python call: the same ids and offsets
    as the call with no special tokens, on a tokenizer fresh from its folder (MiniLM's tokenizer.json truncates and
    pads to 128 tokens, which the call turns off; a long text here has 300 or more), in every script of the test set."""
    texts = [" ".join(words) for words in _sentences()] + [" ".join(FOX * 30)]
    ours = encodings(AutoTokenizer.from_pretrained(kinds[kind]), texts)
    theirs = AutoTokenizer.from_pretrained(kinds[kind])(texts, add_special_tokens=False, return_offsets_mapping=True)
    assert [e.ids for e in ours] == theirs["input_ids"]
    assert [e.offsets for e in ours] == [[tuple(o) for o in offsets] for offsets in theirs["offset_mapping"]]
    assert len(ours[-1].ids) >= 300


def _align_one_at_a_time(tok, sentences):
    """words.align's mapping the plain way, a sentence at a time (how it was written before it ran on all at once)."""
    from xlp.models.words import Aligned, _fill, blank_ids, unknown_token

    out = []
    for words, e in zip(sentences, encodings(tok, [" ".join(s) for s in sentences])):
        lengths = np.array([len(w) for w in words])
        ends = np.cumsum(lengths + 1) - 1
        starts = ends - lengths
        spans = np.asarray(e.offsets, dtype=np.int64).reshape(-1, 2)
        lo = np.searchsorted(ends, spans[:, 0], side="right")
        hi = np.searchsorted(starts, spans[:, 1], side="left") - 1
        none = lo > hi
        lo = np.minimum(lo, len(words) - 1)
        hi = np.where(none, lo, hi)
        none |= np.isin(np.asarray(e.ids, dtype=np.int64), blank_ids(tok))
        spelled = np.zeros(len(words) + 1, dtype=np.int64)
        np.add.at(spelled, lo[~none], 1)
        np.add.at(spelled, hi[~none] + 1, -1)
        hi = np.where(none & (np.cumsum(spelled)[:-1][lo] > 0), lo - 1, hi)
        covered = np.zeros(len(words) + 1, dtype=np.int64)
        np.add.at(covered, lo, 1)
        np.add.at(covered, hi + 1, -1)
        missing = np.flatnonzero(np.cumsum(covered)[:-1] == 0)
        out.append(_fill(Aligned(list(e.ids), lo, hi), missing, unknown_token(tok)[0]))
    return out


@pytest.mark.parametrize("kind", ["bpe", "bpe as published", "sentencepiece", "wordpiece"])
def test_aligning_all_sentences_at_once_equals_one_at_a_time(kinds, kind):
    """words.align maps every sentence's tokens to its words in one pass over all of them: the same ids, words and
    unknown-token fills as a sentence at a time, on six scripts, words with no subword (U+3000, a zero-width joiner,
    a control character: SentencePiece and WordPiece have none for them) at a sentence's start, middle and end,
    one-word and empty sentences, and words ending in a space (GPT-NeoX's tokenizer as published, whose offsets
    are trimmed, gives "a  " an empty span past the last word: it stays in its sentence)."""
    folder = GPT_NEOX_TOKENIZER.parent if kind == "bpe as published" else kinds[kind]
    tok = AutoTokenizer.from_pretrained(folder)
    odd = [["\u3000", "a", "b"], ["a", "\u200d", "b"], ["a", "b", "\x07"], ["\u3000"], ["x"], ["\u3000", "\u200d"],
           ["a", " "], ["x"], ["a", "b "], ["y", "z"]]
    sentences = [[]] + _sentences() + odd + [[]] + _sentences()[:5] + [[]]  # and sentences of no words
    ours, plain = align(tok, sentences), _align_one_at_a_time(tok, sentences)
    assert len(ours) == len(plain) == len(sentences)
    for a, b, words in zip(ours, plain, sentences):
        assert a.ids == b.ids and a.unk == b.unk, words
        assert np.array_equal(a.lo, b.lo) and np.array_equal(a.hi, b.hi), words
    assert sum(a.unk for a in ours) >= (0 if kind.startswith("bpe") else 4)  # byte-level BPE drops no character


def test_long_sentence_windows_are_slices_of_the_running_text_cut_between_words(kinds):
    ex = FeatureExtractor(Checkpoint(0, str(kinds["bpe"])), layers=[1], precision="float32")
    ex.max_len = 12
    words = [s.forms for s in read_conllu(UD / "UD_English-EWT" / "en_ewt-ud-test.conllu", max_sentences=3)][1]
    rows = ex.input_ids(words)
    running = AutoTokenizer.from_pretrained(kinds["bpe"])(" ".join(words))["input_ids"]
    # no word longer than a window: nothing is left out
    assert len(rows) > 2 and [i for r in rows for i in r] == running
    vecs = ex.extract([words])[1]
    assert (np.abs(vecs.astype(np.float32)).sum(1) > 0).all()


def _word_tokens(enc, words: list[str]) -> list[list[int]]:
    """Each word's tokens from transformers' own char_to_token over the running text."""
    out, start = [], 0
    for w in words:
        out.append(sorted({enc.char_to_token(c) for c in range(start, start + len(w))} - {None}))
        start += len(w) + 1
    return out


@pytest.mark.parametrize("kind", FAMILIES)
def test_family_features_with_layers_dropped_equal_the_full_forward(families, kind):
    """Layers 0-1 of a 3-layer model: layers 2-3 are not computed (and the final norm that only the last
    hidden state gets is skipped), and every word's vector equals the full model's hidden state of its
    last subword (causal LMs) or first subword (ModernBERT) under `pooling: auto`."""
    d = families[kind]
    ex = FeatureExtractor(Checkpoint(0, str(d)), layers=[0, 1], batch_tokens=64, precision="float32")
    assert ex.pooling == ("first" if kind == "modernbert" else "last")
    assert ex.truncated and len(reduce(getattr, layer_stack(ex.model).split("."), ex.model)) == 1
    sents = _sentences()[:12]
    got = ex.extract(sents)
    tok, full = AutoTokenizer.from_pretrained(d), AutoModel.from_pretrained(d).eval()
    row = 0
    for words in sents:
        enc = tok(" ".join(words), return_tensors="pt")
        with torch.no_grad():
            hidden = full(**enc, output_hidden_states=True).hidden_states
        assert len(hidden) == 4
        for toks in _word_tokens(enc, words):
            pick = toks[-1] if ex.pooling == "last" else toks[0]
            for layer in (0, 1):
                np.testing.assert_allclose(got[layer][row].astype(np.float32), hidden[layer][0, pick].numpy(),
                                           rtol=2e-3, atol=2e-3)
            row += 1
    every = FeatureExtractor(Checkpoint(0, str(d)), layers="all", batch_tokens=64, precision="float32")
    assert not every.truncated and every.layers == [0, 1, 2, 3]
    np.testing.assert_allclose(every.extract(sents)[1].astype(np.float32), got[1].astype(np.float32), atol=2e-3)


def test_model_kind_and_causality_of_every_family(families, kinds, tmp_path):
    for kind, d in families.items():
        cfg = AutoConfig.from_pretrained(d)
        assert model_kind(cfg, d) == ("masked" if kind == "modernbert" else "causal"), kind
        assert is_causal(cfg) == (kind != "modernbert"), kind
    assert model_kind(AutoConfig.from_pretrained(kinds["sentencepiece"])) == "masked"  # XLM-R with its MLM head
    assert model_kind(AutoConfig.from_pretrained(MINILM), MINILM) is None  # a bare BERT encoder
    bare = tmp_path / "bare"  # Pythia's base model saved without its head: causal, but no LM head to score with
    AutoModel.from_pretrained(families["gpt_neox"]).save_pretrained(bare)
    cfg = AutoConfig.from_pretrained(bare)
    assert cfg.architectures == ["GPTNeoXModel"] and is_causal(cfg) and model_kind(cfg, bare) is None
    cfg.architectures = None  # a config that does not say: the weights' names decide
    assert model_kind(cfg, kinds["sentencepiece"]) == "causal" and model_kind(cfg, bare) is None
    xcfg = AutoConfig.from_pretrained(kinds["sentencepiece"])
    xcfg.architectures = None
    assert model_kind(xcfg, kinds["sentencepiece"]) == "masked"


def _text() -> str:
    return " ".join(s.text for s in read_conllu(UD / "UD_German-GSD" / "de_gsd-ud-test.conllu", max_sentences=3))


def test_causal_bits_per_byte_equal_a_plain_loop_over_the_tokens(families):
    """A text of ~90 tokens, a window of 32 and a stride of 12: the scorer's bits per byte equal -log2 p
    summed token by token (one forward per token, on exactly the context the window rule gives it:
    the whole prefix in the first window, then the window ending where the token's stride block ends)."""
    d = families["gpt_neox"]
    text = _text()
    sc = CausalLmScorer(Checkpoint(0, str(d)), window=32, stride=12, batch_tokens=128, precision="float32")
    got = sc.bits([text, "Kurz.", ""])
    tok, model = AutoTokenizer.from_pretrained(d), AutoModelForCausalLM.from_pretrained(d).eval()
    ids = tok(text)["input_ids"]
    assert sc.context == [tok.convert_tokens_to_ids("<|endoftext|>")] and 60 < len(ids) < 120
    seq, bits = sc.context + ids, 0.0
    for p in range(1, len(seq)):
        end = p + 1 if p < 32 else min(32 + -(-(p + 1 - 32) // 12) * 12, len(seq))
        start = max(0, end - 32) if p >= 32 else 0
        with torch.no_grad():
            logits = model(torch.tensor([seq[start:p]])).logits[0, -1].double()
        bits -= torch.log_softmax(logits, -1)[seq[p]].item() / math.log(2)
    n_bytes = len(text.encode("utf-8"))
    assert (got.tokens[0], got.bytes[0], got.chars[0]) == (len(ids), n_bytes, len(text))
    assert n_bytes > len(text)  # German umlauts: bytes and characters differ
    assert abs(got.bits[0] / got.bytes[0] - bits / n_bytes) < 1e-4
    assert got.bits[2] == 0 and got.bytes[2] == 0 and got.tokens[1] > 0


@pytest.mark.parametrize("kind", CAUSAL)
def test_causal_bits_of_a_text_within_the_window_equal_one_forward(families, kind):
    """Each causal family, its own context token (Llama-style: the BOS its tokenizer adds; the others:
    <|endoftext|>): the bits equal one full forward over context + text."""
    d = families[kind]
    sc = CausalLmScorer(Checkpoint(0, str(d)), window=120, stride=60, precision="float32")
    tok, model = AutoTokenizer.from_pretrained(d), AutoModelForCausalLM.from_pretrained(d).eval()
    text = "Der schnelle braune Fuchs springt über den faulen Hund."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert sc.context == ([tok.bos_token_id] if kind == "llama" else [tok.convert_tokens_to_ids("<|endoftext|>")])
    seq = torch.tensor([sc.context + ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(seq).logits[0, :-1].double(), -1)
    want = -logp[torch.arange(len(ids)), seq[0, 1:]].sum().item() / math.log(2)
    got = sc.bits([text])
    assert got.bits[0] == pytest.approx(want, rel=1e-5)
    assert (got.bytes[0], got.chars[0]) == (len(text.encode()), len(text))


def test_stride_must_fit_the_window(families):
    with pytest.raises(XlpError, match="stride 40 must be at least 1 and below the window"):
        CausalLmScorer(Checkpoint(0, str(families["gpt2"])), window=32, stride=40, precision="float32")


HUB_NAMES = {  # each family's series named the way its publishers name their checkpoints
    "gpt_neox": ("step0", "step512", "step1000"),  # Pythia branches
    "bloom": ("global_step0", "global_step500", "global_step1000"),
    "olmo": ("step0-tokens0B", "step500-tokens2B", "step1000-tokens4B"),
    "llama": ("step-0", "step-500", "step-1000"),  # SmolLM2
    "gpt2": ("checkpoint-0", "checkpoint-500", "checkpoint-1000"),
    "modernbert": ("step_0", "step_500", "step_1000"),
}


@pytest.mark.parametrize("kind", sorted(HUB_NAMES))
def test_every_family_runs_pos_bpc_and_retrieval_through_launch(kind, tmp_path, ray_local):
    """A tiny random series of each family, saved as its publishers save it (LM head included, a real
    tokenizer of its kind, the hub's step names), runs pos, bpc and retrieval end to end, with the outcomes an
    untrained model must give: POS at or above its majority baseline, bits per character and per byte at the
    uniform rate over the vocabulary, and in-language retrieval finding each sentence itself."""
    import pandas as pd
    from conftest import run_xlp, write_spec

    for seed, name in enumerate(HUB_NAMES[kind]):
        make_tiny_family(kind, tmp_path / "series" / name, seed=seed, layers=2)
    spec = write_spec(tmp_path / "s.yaml", name=kind, output=str(tmp_path / "run"),
                      checkpoints=[{"path": str(tmp_path / "series" / "*")}],
                      data={"ud_root": str(UD), "languages": ["en", "ru"], "max_train_sentences": 30,
                            "max_test_sentences": 12},  # ru: 1.8 UTF-8 bytes a character, so bytes are not chars
                      tasks=["pos", "bpc", "retrieval"], retrieval={"max_sentences": 8}, probe={"seeds": [0]})
    r = run_xlp("launch", spec, "--quiet")
    assert r.returncode == 0, r.stderr
    probes = pd.read_parquet(tmp_path / "run" / "results" / "probes.parquet")
    assert sorted(set(probes.step)) == [0, 512 if kind == "gpt_neox" else 500, 1000]
    assert set(probes.task) == {"pos", "bpc", "retrieval"}
    causal = kind != "modernbert"
    pos = probes[probes.task == "pos"]
    assert set(pos.pooling) == {"last" if causal else "first"} and set(pos.layer) == {0, 1, 2}
    bpc = probes[probes.task == "bpc"]
    assert set(bpc.estimator) == {"causal_exact" if causal else "masked_pll"} and len(bpc) == 3 * 2
    # an untrained model knows nothing: about the uniform rate over its vocabulary (measured within 0.3 %), per
    # character (`value` against its `baseline`) and per UTF-8 byte of the texts scored
    assert ((bpc.value / bpc.baseline).between(0.98, 1.02)).all()
    test = {lang: [s.text for s in read_conllu(find_treebank(UD, lang).split_file("test")[1], max_sentences=12)]
            for lang in ("en", "ru")}
    chars_per_byte = {lang: sum(map(len, t)) / sum(len(x.encode()) for x in t) for lang, t in test.items()}
    uniform_per_byte = bpc.baseline * bpc.src_lang.map(chars_per_byte)
    assert ((bpc.bits_per_byte / uniform_per_byte).between(0.98, 1.02)).all()
    # POS: in-language at or above the majority baseline at every layer and step, and clearly above on average
    # (measured: en 0.27 to 0.37 against 0.14, ru 0.39 to 0.58 against 0.27)
    inlang = pos[pos.src_lang == pos.tgt_lang]
    assert len(inlang) == 3 * 2 * 3 and (inlang.value >= inlang.baseline).all()
    assert (inlang.groupby("src_lang").value.mean() > inlang.groupby("src_lang").baseline.mean() + 0.05).all()
    # retrieval in-language: every sentence finds itself, at every layer and step
    retrieval = probes[probes.task == "retrieval"]
    itself = retrieval[retrieval.src_lang == retrieval.tgt_lang]
    assert len(itself) == 3 * 3 * 2 and (itself.value == 1.0).all() and (itself.n_test == 8).all()
    figures = {f.name for f in (tmp_path / "run" / "report" / "figures").iterdir()}
    assert {"transfer_pos.png", "transfer_retrieval.png"} <= figures and "transfer_bpc.png" not in figures
    if kind == "olmo":
        assert sorted(set(probes.tokens)) == [0, 2 * 10**9, 4 * 10**9]


def test_bf16_and_sharded_weights_load_as_stored(tmp_path):
    """LLM-sized series: weights saved in bf16 and in several safetensors shards load as they are stored
    (bf16 stays bf16), pass pre-flight's weight check, and `xlp validate`'s size is every shard's."""
    from transformers import AutoModelForCausalLM

    from xlp.models.checkpoints import check_weights
    from xlp.models.loading import weight_sizes

    d = make_tiny_family("llama", tmp_path / "step-100", seed=0, layers=2)
    model = AutoModelForCausalLM.from_pretrained(d).to(torch.bfloat16)
    (d / "model.safetensors").unlink()
    model.save_pretrained(d, max_shard_size="40KB")
    shards = sorted(d.glob("model-*.safetensors"))
    assert len(shards) > 1 and (d / "model.safetensors.index.json").is_file()
    ckpt = Checkpoint(100, str(d))
    check_weights(ckpt)
    params, nbytes, dtype = weight_sizes(ckpt)
    assert dtype == "BF16" and nbytes == 2 * params
    assert params == sum(p.numel() for p in model.parameters())  # tied embeddings are stored once
    ex = FeatureExtractor(ckpt, layers=[1], precision="float32")
    assert ex.model.dtype == torch.bfloat16
    vecs = ex.extract([["The", "cat", "sat", "."]])[1]
    assert vecs.shape == (4, 32) and np.isfinite(vecs.astype(np.float32)).all() and np.abs(vecs).sum() > 0
