"""Words to subword tokens through the running text, for every tokenizer kind.

A sentence's words are joined by single spaces and tokenized as one text, so the ids are the
tokenizer's own for that text: byte-level BPE (GPT-2, GPT-NeoX, BLOOM, Llama 3) keeps each word's
leading space, which tokenizing word by word (`is_split_into_words`) loses. Tokens are mapped back to
words by character spans: word i covers [start_i, end_i) of the joined text, and a token belongs to
every word its offsets overlap. A token that covers no word's character (SentencePiece's lone "▁",
an empty span) belongs to the next word, as `is_split_into_words` assigns it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Aligned:
    """One sentence's tokens: ids, and for each token the first and last word it belongs to."""
    ids: list[int]
    lo: np.ndarray
    hi: np.ndarray


def running_text(words: Sequence[str]) -> str:
    return " ".join(words)


def align(tokenizer, sentences: Sequence[Sequence[str]]) -> list[Aligned]:
    """Tokenize every sentence's running text in one batch call (no special tokens) and map tokens to words."""
    enc = tokenizer([running_text(s) for s in sentences], add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for words, ids, offsets in zip(sentences, enc["input_ids"], enc["offset_mapping"]):
        lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
        ends = np.cumsum(lengths + 1) - 1
        starts = ends - lengths
        spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        lo = np.searchsorted(ends, spans[:, 0], side="right")  # first word ending after the token starts
        hi = np.searchsorted(starts, spans[:, 1], side="left") - 1  # last word starting before it ends
        none = lo > hi  # covers no word character: the next word's (the last word's at the end)
        lo = np.minimum(lo, len(words) - 1)
        hi = np.where(none, lo, hi)
        out.append(Aligned(list(ids), lo, hi))
    return out


def windows(sent: Aligned, room: int):
    """(start, end) token ranges of at most `room` tokens, cut between words; a word longer than a
    window is cut, and the rest of it is left out (the word keeps its first window's tokens)."""
    n = len(sent.ids)

    def cut_ok(t: int) -> bool:  # may a window end before token t?
        return sent.lo[t] > sent.hi[t - 1]

    start = 0
    while start < n:
        end = min(start + room, n)
        while end < n and end > start and not cut_ok(end):
            end -= 1
        if end == start:
            end = min(start + room, n)
        yield start, end
        start = end
        while 0 < start < n and not cut_ok(start):
            start += 1


def pairs(sent: Aligned, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """(token index within the window, word index in the sentence) for every token-word membership."""
    lo, hi = sent.lo[start:end], sent.hi[start:end]
    counts = hi - lo + 1
    tok = np.repeat(np.arange(end - start), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    word = np.repeat(lo, counts) + (np.arange(int(counts.sum())) - first)
    return tok, word
