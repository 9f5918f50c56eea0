"""The replica's text and vocabulary: UD train/dev sentences and the UDHR per language, sampled with XLM-R's
exponentially smoothed probabilities, and a SentencePiece Unigram vocabulary trained on that smoothed sample."""

from __future__ import annotations

import csv
import re
import tempfile
from pathlib import Path

import numpy as np

from xlp.config import PretrainSpec
from xlp.data.conllu import conllu_files, read_part, treebanks
from xlp.data.ud_release import resolve_ud_root
from xlp.errors import XlpError
from xlp.paths import shared_dir

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def _ud_languages(ud_root: Path) -> list[str]:
    return sorted({f.name.split("_", 1)[0] for f in conllu_files(ud_root, "*-ud-*.conllu")})


def _ud_text(ud_root: Path, lang: str, split_test: float | None) -> list[str]:
    """A language's UD text for pretraining: every treebank's train split (one file or its parts) then its dev
    split, never a test split; with `split_test`, the train part of a test-only treebank as data.split_test cuts
    it. A sentence written without spaces (Chinese) enters as its words joined by spaces, as the probes read it."""
    text: list[str] = []
    for tb in treebanks(ud_root, lang):
        parts = [(tb.splits[s], None) for s in ("train", "dev") if s in tb.splits]
        if not parts and split_test is not None and "test" in tb.splits:
            parts = [(tb.splits["test"], ("train", split_test))]
        for files, part in parts:
            for s in read_part(files, None, False, part):
                unspaced = s.text.count(" ") < (len(s.forms) - 1) / 2
                text.append(" ".join(s.forms) if unspaced else s.text)
    return text


def corpus(cfg: PretrainSpec) -> dict[str, list[str]]:
    """Raw text per language: UD train and dev sentences (never test) plus UDHR paragraphs."""
    ud_root = resolve_ud_root(cfg.ud_root or str(shared_dir() / "ud"), cfg.languages)
    udhr = Path(cfg.udhr) if cfg.udhr else shared_dir() / "udhr" / "udhr.tsv"
    langs = cfg.languages or _ud_languages(ud_root)
    texts = {lang: _ud_text(ud_root, lang, cfg.split_test.get(lang)) for lang in langs}
    if udhr.is_file():
        with open(udhr, encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                if row["lang"] in texts:
                    texts[row["lang"]].append(row["text"])
    empty = [lang for lang, t in texts.items() if not t]
    if empty:
        raise XlpError(f"pretrain.languages: no training text (UD train/dev or UDHR) for {empty} "
                       f"under {ud_root} and {udhr}")
    return texts


def sampling_probs(sizes: list[int], alpha: float) -> np.ndarray:
    """XLM-R's language sampling: q_i proportional to p_i^alpha, p_i the language's share of the text."""
    p = np.asarray(sizes, dtype=float) / sum(sizes)
    q = p ** alpha
    return q / q.sum()


def smoothed_sample(texts: dict[str, list[str]], alpha: float, seed: int) -> list[str]:
    """The corpus as XLM-R's sampling sees it, as many characters as the corpus holds: each language's share
    q_i ∝ p_i^alpha of them, its sentences in a seeded order, a small language's repeated."""
    langs = sorted(texts)
    chars = [sum(map(len, texts[lang])) for lang in langs]
    rng = np.random.default_rng(seed)
    sample: list[str] = []
    for lang, q in zip(langs, sampling_probs(chars, alpha)):
        budget, order, taken, i = q * sum(chars), rng.permutation(len(texts[lang])), 0, 0
        while taken < budget:
            line = texts[lang][order[i % len(order)]]
            sample.append(line)
            taken, i = taken + len(line), i + 1
    return sample


def train_tokenizer(texts: dict[str, list[str]], cfg: PretrainSpec, out: Path) -> None:
    """SentencePiece's Unigram trainer (one thread, no input shuffling: the same text gives the same bytes) on the
    smoothed sample, with byte fallback: a character below `char_coverage` of the sample (rare Han characters)
    is spelled in bytes instead of taking a piece of its own. Saved as a fast XLM-R tokenizer."""
    import sentencepiece as spm
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import Unigram
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "spm"
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(smoothed_sample(texts, cfg.alpha, cfg.seed)), model_prefix=str(prefix),
                model_type="unigram", vocab_size=cfg.vocab_size, character_coverage=cfg.char_coverage,
                byte_fallback=True, num_threads=1, shuffle_input_sentence=False, input_sentence_size=0,
                max_sentence_length=1 << 16, bos_id=0, pad_id=1, eos_id=2, unk_id=3,
                user_defined_symbols=["<mask>"], hard_vocab_limit=False, minloglevel=2)
        except RuntimeError as e:
            need = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(e))
            if need is None:
                raise
            raise XlpError(f"pretrain.vocab_size: {cfg.vocab_size} pieces cannot hold this text's {need[1]} "
                           f"required ones (256 bytes, the special tokens and the characters char_coverage "
                           f"{cfg.char_coverage} keeps); raise vocab_size or lower char_coverage") from None
        sp = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
        vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    assert [p for p, _ in vocab[:len(SPECIALS)]] == SPECIALS
    backend = Tokenizer(Unigram(vocab, unk_id=SPECIALS.index("<unk>"), byte_fallback=True))
    backend.normalizer = normalizers.Sequence([normalizers.Nmt(), normalizers.NFKC(),
                                               normalizers.Replace(Regex(" {2,}"), " ")])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    backend.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Metaspace(replacement="\u2581", prepend_scheme="always")])
    backend.post_processor = TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                special_tokens=[("<s>", 0), ("</s>", 2)])
    # the generic fast class keeps the model as built (XLMRobertaTokenizer would rebuild it without byte fallback)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                  sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                  mask_token="<mask>")
    tok.save_pretrained(out)
