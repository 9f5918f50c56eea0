"""Human word alignments: a sentence file (`source ||| target`, tokens split by ASCII spaces) and a gold file of
links (`i-j` sure, `ipj` possible), as the field publishes them (../shared/alignment's layout)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from xlp.data.text import read_lines
from xlp.errors import XlpError

_LINK = re.compile(r"(\d+)([-p])(\d+)")

Link = tuple[int, int]


@dataclass(frozen=True)
class GoldSentence:
    """One sentence pair: the space-separated tokens of each side and its gold links, 0-based (source, target)."""

    src: tuple[str, ...]
    tgt: tuple[str, ...]
    sure: frozenset[Link]
    possible: frozenset[Link]  # sure ∪ possible, as the scores define P


def pair_files(folder: str | Path, pair: str) -> tuple[Path, Path]:
    """The sentence file and the gold file of a pair such as `enfr` in a folder laid out like
    ../shared/alignment (`enfr.src-tgt`, `enfr.gold`)."""
    folder = Path(folder)
    return folder / f"{pair}.src-tgt", folder / f"{pair}.gold"


def read_pair(folder: str | Path, pair: str, one_indexed: bool = True,
              max_sentences: int | None = None) -> list[GoldSentence]:
    """The gold corpus of `pair` in `folder` (see read_gold)."""
    text, gold = pair_files(folder, pair)
    return read_gold(text, gold, one_indexed=one_indexed, max_sentences=max_sentences)


def tokens(side: str) -> tuple[str, ...]:
    """A side's words: split at ASCII spaces only (runs of them, leading and trailing ones too); every other
    character, another Unicode space such as the ideographic space U+3000 among them, stays inside its token,
    as the gold sets that publish such tokens (KFTT Japanese-English) count it."""
    return tuple(t for t in side.split(" ") if t)


def read_gold(text_path: str | Path, gold_path: str | Path, one_indexed: bool = True,
              max_sentences: int | None = None) -> list[GoldSentence]:
    """Sentence pairs (`source ||| target` a line, words split at ASCII spaces) and their links (`i-j`
    sure, `ipj` possible, source index first, 1-based unless `one_indexed` is False), the first
    `max_sentences` of them. Malformed input is an XlpError naming the file and line."""
    text_path, gold_path = Path(text_path), Path(gold_path)
    texts, golds = (read_lines(p, "gold alignments") for p in (text_path, gold_path))
    if len(texts) != len(golds):
        longer, short_n = (text_path, len(golds)) if len(texts) > len(golds) else (gold_path, len(texts))
        raise XlpError(f"{longer}:{short_n + 1}: {text_path.name} has {len(texts)} lines but {gold_path.name} has "
                       f"{len(golds)}; each sentence pair needs one line of links (an empty line for none)")
    base = 1 if one_indexed else 0
    out = []
    for k, (text, links) in enumerate(zip(texts, golds), 1):
        if max_sentences is not None and k > max_sentences:
            break
        sides = text.split("|||")
        if len(sides) != 2:
            raise XlpError(f"{text_path}:{k}: expected `source ||| target` (one `|||`), found {len(sides) - 1}")
        src, tgt = tokens(sides[0]), tokens(sides[1])
        if not src or not tgt:
            raise XlpError(f"{text_path}:{k}: the {'source' if not src else 'target'} side has no words")
        sure, possible = set(), set()
        for token in links.split():
            m = _LINK.fullmatch(token)
            if not m:
                raise XlpError(f"{gold_path}:{k}: bad link {token!r} (expected i-j for sure, ipj for possible)")
            i, j = int(m[1]) - base, int(m[3]) - base
            if not (0 <= i < len(src) and 0 <= j < len(tgt)):
                raise XlpError(f"{gold_path}:{k}: link {token} is out of range: the sentence has {len(src)} source "
                               f"and {len(tgt)} target words ({base}-based links)")
            (sure if m[2] == "-" else possible).add((i, j))
        out.append(GoldSentence(src, tgt, frozenset(sure), frozenset(sure | possible)))
    return out
