"""The replica's text and vocabulary: UD train/dev sentences and the UDHR per language, sampled with XLM-R's
exponentially smoothed probabilities, and a SentencePiece Unigram vocabulary trained on the text."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from xlp.config import PretrainSpec
from xlp.data.conllu import conllu_files, read_conllu
from xlp.data.ud_release import resolve_ud_root
from xlp.errors import XlpError
from xlp.paths import shared_dir

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def _ud_languages(ud_root: Path) -> list[str]:
    return sorted({f.name.split("_", 1)[0] for f in conllu_files(ud_root, "*-ud-*.conllu")})


def corpus(cfg: PretrainSpec) -> dict[str, list[str]]:
    """Raw text per language: UD train and dev sentences (never test) plus UDHR paragraphs."""
    ud_root = resolve_ud_root(cfg.ud_root or str(shared_dir() / "ud"), cfg.languages)
    udhr = Path(cfg.udhr) if cfg.udhr else shared_dir() / "udhr" / "udhr.tsv"
    langs = cfg.languages or _ud_languages(ud_root)
    texts: dict[str, list[str]] = {lang: [] for lang in langs}
    for lang in langs:  # every treebank of the language, its train then dev text
        for folder in sorted({f.parent for f in conllu_files(ud_root, f"{lang}_*-ud-*.conllu")}):
            for split in ("train", "dev"):
                for f in sorted(folder.glob(f"{lang}_*-ud-{split}.conllu")):
                    texts[lang] += [s.text for s in read_conllu(f)]
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


def train_tokenizer(texts: dict[str, list[str]], vocab_size: int, out: Path) -> None:
    from tokenizers import SentencePieceUnigramTokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import XLMRobertaTokenizerFast

    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator([t for lang in sorted(texts) for t in texts[lang]], vocab_size=vocab_size,
                           special_tokens=SPECIALS, unk_token="<unk>", show_progress=False)
    backend = sp._tokenizer
    backend.post_processor = TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                special_tokens=[("<s>", 0), ("</s>", 2)])
    tok = XLMRobertaTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                  sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                  mask_token="<mask>")
    tok.save_pretrained(out)
