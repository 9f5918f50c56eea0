"""Words to subword tokens through the running text, for every tokenizer kind.

A sentence's words are joined by single spaces and tokenized as one text, so the ids are the
tokenizer's own for that text: byte-level BPE (GPT-2, GPT-NeoX, BLOOM, Llama 3) keeps each word's
leading space, which tokenizing word by word (`is_split_into_words`) loses. Tokens are mapped back to
words by character spans: word i covers [start_i, end_i) of the joined text, and a token belongs to
every word its offsets overlap. A token that spells no word's character (SentencePiece's lone "▁",
an empty span) is read by the model but belongs to no word when the next word has tokens of its own: XLM-R
writes most Chinese and Japanese words as "▁" then the word's pieces, and under first-subword pooling the
word would be read as that "▁" (the same vector for every such word). Where the next word has no other
token, the lone token is that word's, as `is_split_into_words` assigns it. A word the tokenizer gives
no subword (U+3000 or a zero-width joiner for a WordPiece or SentencePiece vocabulary, a control
character, an emoji a vocabulary drops) is read as the tokenizer's unknown token, inserted in its place,
as SimAlign does: it gets a real vector, its neighbours keep theirs, and `Aligned.unk` counts it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Aligned:
    """One sentence's tokens: ids, and for each token the first and last word it belongs to (hi < lo: none,
    a lone "▁" before a word's own tokens); `unk` words had no subword and were read as the unknown token."""
    ids: list[int]
    lo: np.ndarray
    hi: np.ndarray
    unk: int = 0


def running_text(words: Sequence[str]) -> str:
    return " ".join(words)


# (words or texts, the token they were read as) -> how many this process read so for want of a subword; a
# worker reports what one unit added (xlp/run/work.py), and the run's notes say it
NO_SUBWORD: Counter[tuple[str, str]] = Counter()


def unknown_token(tokenizer) -> tuple[int, str]:
    """The id and text of the token a word without subwords is read as: the unknown token, or for a
    vocabulary without one (byte-level BPE, which drops no character) its end-of-text token."""
    for name in ("unk_token", "eos_token", "pad_token"):
        token = getattr(tokenizer, name, None)
        if token is not None and getattr(tokenizer, f"{name}_id", None) is not None:
            return getattr(tokenizer, f"{name}_id"), str(token)
    return 0, tokenizer.convert_ids_to_tokens(0)


def blank_ids(tokenizer) -> list[int]:
    """The id of SentencePiece's lone word-boundary piece "▁", if the vocabulary has one. Its offsets depend on
    how the tokenizer was saved: the XLM-R tokenizer built from tokenizer.json gives it the space before a word,
    the same loaded from a checkpoint folder the word's first character, so offsets cannot tell that it spells
    nothing. (Byte-level BPE's lone "Ġ" covers the space in both, and "Ġ" is also a Maltese letter.)"""
    found = tokenizer.convert_tokens_to_ids("▁")
    return [] if found is None or found == getattr(tokenizer, "unk_token_id", None) else [found]


def _fill(sent: Aligned, missing: np.ndarray, unk: int) -> Aligned:
    """Give each word in `missing` (the words no token reads) the unknown token, inserted before the next word's
    tokens."""
    if not len(missing):
        return sent
    at = np.searchsorted(sent.lo, missing, side="right")  # after the tokens of the words before it
    return Aligned(np.insert(np.asarray(sent.ids, dtype=np.int64), at, unk).tolist(),
                   np.insert(sent.lo, at, missing), np.insert(sent.hi, at, missing), len(missing))


def _tokens_per_word(lo: np.ndarray, hi: np.ndarray, n_words: int) -> np.ndarray:
    """(n_words,) how many of the token spans [lo, hi] (inclusive; an empty one has hi < lo) cover each word."""
    change = np.zeros(n_words + 1, dtype=np.int64)
    np.add.at(change, lo, 1)
    np.add.at(change, hi + 1, -1)
    return np.cumsum(change)[:-1]


def encodings(tokenizer, texts: list[str]) -> list:
    """The fast tokenizer's encodings (ids, offsets) of `texts`, as its own call with no special tokens makes them:
    its Rust backend with no truncation and no padding (what a saved tokenizer.json may set, and the call turns off),
    without the call's Python dict for every text (half the time of aligning 2,000 sentences)."""
    backend = tokenizer.backend_tokenizer
    if backend.truncation is not None:
        backend.no_truncation()
    if backend.padding is not None:
        backend.no_padding()
    split = bool(getattr(tokenizer, "split_special_tokens", False))
    if backend.encode_special_tokens != split:
        backend.encode_special_tokens = split
    return backend.encode_batch(texts, add_special_tokens=False)


def align(tokenizer, sentences: Sequence[Sequence[str]]) -> list[Aligned]:
    """Tokenize every sentence's running text in one batch call (no special tokens) and map tokens to words;
    a word with no token gets the unknown token (see the module's docstring). The mapping runs on all sentences
    at once: their texts laid end to end, one character apart, so no token's span reaches another sentence's
    words (2,000 EWT sentences to MiniLM's tokens: 0.07 s with the encoding, against 0.16 s a sentence at a time)."""
    if not sentences:
        return []
    enc = encodings(tokenizer, [running_text(s) for s in sentences])
    n_words = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    n_tokens = np.fromiter((len(e.ids) for e in enc), dtype=np.int64, count=len(enc))
    word_base = np.cumsum(n_words) - n_words  # each sentence's first word, among all
    lengths = np.fromiter((len(w) for s in sentences for w in s), dtype=np.int64, count=int(n_words.sum()))
    ends = np.cumsum(lengths + 1) - 1  # one space after each word, and one between texts: no text touches the next
    starts = ends - lengths
    first_char = np.append(starts, ends[-1] + 1 if len(ends) else 0)  # each word's, and past the last (for no words)
    text_base = np.repeat(first_char[word_base], n_tokens)  # each token's text's first character, among all
    sentence_of = np.repeat(np.arange(len(sentences)), n_tokens)
    spans = np.array([o for e in enc for o in e.offsets], dtype=np.int64).reshape(-1, 2) + text_base[:, None]
    ids = np.array([i for e in enc for i in e.ids], dtype=np.int64)
    lo = np.searchsorted(ends, spans[:, 0], side="right")  # first word ending after the token starts
    hi = np.searchsorted(starts, spans[:, 1], side="left") - 1  # last word starting before it ends
    none = lo > hi  # covers no word character: the next word's (the last word's at the end) ...
    lo = np.minimum(lo, (word_base + n_words - 1)[sentence_of])
    hi = np.where(none, lo, hi)
    none |= np.isin(ids, blank_ids(tokenizer))
    spelled = _tokens_per_word(lo[~none], hi[~none], len(lengths))
    hi = np.where(none & (spelled[lo] > 0), lo - 1, hi)  # ... unless it has tokens of its own
    unread = np.flatnonzero(_tokens_per_word(lo, hi, len(lengths)) == 0)  # the words no token reads, among all
    missing = np.split(unread - np.repeat(word_base, n_words)[unread], np.searchsorted(unread, word_base[1:]))
    lo -= word_base[sentence_of]  # each sentence's own word numbers
    hi -= word_base[sentence_of]
    unk = unknown_token(tokenizer)[0]
    cuts = np.cumsum(n_tokens)[:-1]
    return [_fill(Aligned(e.ids, first, last), m, unk)
            for e, first, last, m in zip(enc, np.split(lo, cuts), np.split(hi, cuts), missing)]


def windows(sent: Aligned, room: int):
    """(start, end) token ranges of at most `room` tokens, cut between words; a word longer than a
    window is cut, and the rest of it is left out (the word keeps its first window's tokens)."""
    n = len(sent.ids)

    def cut_ok(t: int) -> bool:  # may a window end before token t? (not after a lone "▁", which leads its word)
        return sent.lo[t] > sent.hi[t - 1] and sent.lo[t - 1] <= sent.hi[t - 1]

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
