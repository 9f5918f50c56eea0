"""Cross-lingual sentence retrieval on parallel text: no probe. Each sentence is the mean of its
subword vectors at a layer; a source sentence retrieves its nearest target sentence by cosine, and
accuracy@1 is the share that find their own translation."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from xlp.errors import XlpError
from xlp.tasks.ud import conllu_files, read_conllu, require_sentences

NAME = "retrieval"
METRIC = "accuracy@1"


def parallel_udhr(path: Path, langs: list[str], cap: int | None) -> dict[str, list[str]]:
    """The UDHR paragraphs every language has, aligned by (article, paragraph)."""
    by_lang: dict[str, dict[tuple[str, str], str]] = {}
    try:
        with open(path, encoding="utf-8", newline="") as f:
            for n, row in enumerate(csv.DictReader(f, delimiter="\t"), 2):
                if None in row.values() or not {"lang", "article", "paragraph", "text"} <= row.keys():
                    raise XlpError(f"{path}:{n}: expected columns lang, article, paragraph, text")
                by_lang.setdefault(row["lang"], {})[(row["article"], row["paragraph"])] = row["text"]
    except OSError as e:
        raise XlpError(f"data.udhr: cannot read {path}: {e.strerror}") from None
    return _aligned(by_lang, langs, cap, str(path))


def parallel_pud(ud_root: Path, langs: list[str], cap: int | None) -> dict[str, list[str]]:
    """The Parallel UD test sentences, aligned by sent_id across languages."""
    by_lang = {}
    for lang in langs:
        files = conllu_files(ud_root, f"{lang}_pud-ud-test.conllu")
        if files:
            sents = read_conllu(files[0])
            require_sentences(files[0], sents)
            by_lang[lang] = {s.sent_id: s.text for s in sents}
    return _aligned(by_lang, langs, cap, f"{ud_root} (PUD treebanks)")


def _aligned(by_lang: dict[str, dict], langs: list[str], cap: int | None, where: str) -> dict[str, list[str]]:
    present = [lang for lang in langs if by_lang.get(lang)]
    if len(present) < 2:
        raise XlpError(f"retrieval: fewer than two of {langs} have parallel text in {where}")
    keys = sorted(set.intersection(*(set(by_lang[lang]) for lang in present)))[:cap]
    if not keys:
        raise XlpError(f"retrieval: the languages {present} share no aligned sentence in {where}")
    return {lang: [by_lang[lang][k] for k in keys] for lang in present}


def retrieval_hits(src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """For each source row, whether its cosine nearest neighbour among the target rows is its own
    translation (the same row index); on a tie the first row wins."""
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    sim = unit(src) @ unit(tgt).T
    return sim.argmax(1) == np.arange(len(src))
