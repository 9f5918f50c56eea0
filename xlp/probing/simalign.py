"""Word alignment in the manner of SimAlign (Jalili Sabet et al. 2020): no training. The words of a
sentence and of its translation are aligned from the cosine similarity of their vectors at a layer,
and the links are scored against human gold links (sure S and possible P, with S ⊆ P).

Scores follow awesome-align's tools/aer.py and SimAlign's calc_align_score.py: precision =
|A∩P| / |A|, recall = |A∩S| / |S|, AER = 1 − (|A∩S| + |A∩P|) / (|A| + |S|), F1 the harmonic mean of
precision and recall; each a ratio of counts summed over the corpus (not a mean of sentence scores).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike

from xlp.data.alignment import GoldSentence, Link
from xlp.errors import XlpError

Method = Literal["argmax", "itermax"]
METHODS: tuple[str, ...] = get_args(Method)
BASELINE = "diagonal"


def similarity(src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """SimAlign's similarity of every source word (rows) to every target word: (cosine + 1) / 2, in
    [0, 1]. The shift changes no argmax, but IterMax's masking multiplies similarities, so it matters
    there. A zero vector (a word with no subword) has cosine 0 with everything."""
    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    return (unit(src) @ unit(tgt).T + 1.0) / 2.0


def _mutual_best(sim: np.ndarray) -> np.ndarray:
    """Boolean (m, n): cells that are the maximum of their row and of their column (first on ties)."""
    m, n = sim.shape
    fwd = np.zeros((m, n), dtype=bool)
    fwd[np.arange(m), sim.argmax(axis=1)] = True
    bwd = np.zeros((m, n), dtype=bool)
    bwd[sim.argmax(axis=0), np.arange(n)] = True
    return fwd & bwd


def _as_links(matrix: np.ndarray) -> set[Link]:
    return {(int(i), int(j)) for i, j in np.argwhere(matrix)}


def argmax_links(sim: np.ndarray) -> set[Link]:
    """SimAlign's ArgMax ("inter"): (i, j) where j is i's most similar target word and i is j's most
    similar source word."""
    return _as_links(_mutual_best(sim))


def itermax_links(sim: np.ndarray, max_count: int = 2, alpha: float = 0.9) -> set[Link]:
    """SimAlign's IterMax with its defaults: ArgMax, then up to `max_count` − 1 more rounds of ArgMax
    on a masked matrix in which a cell whose source and target words are both still unaligned keeps
    its similarity, a cell with one of them aligned is weighted by `alpha` (clipped at 1), and a cell
    with both aligned cannot be linked. A sentence with 2 words or fewer on a side gets ArgMax only;
    rounds stop when one side is fully aligned or a round adds nothing."""
    sim = np.asarray(sim, dtype=np.float64)
    links = _mutual_best(sim)
    if min(sim.shape) <= 2:
        return _as_links(links)
    for _ in range(max_count - 1):
        row_free, col_free = ~links.any(axis=1), ~links.any(axis=0)
        if not row_free.any() or not col_free.any():
            break
        weight = np.minimum(alpha * row_free[:, None] + alpha * col_free[None, :], 1.0)
        new = _mutual_best(sim * weight) & (row_free[:, None] | col_free[None, :])
        if not new.any():
            break
        links |= new
    return _as_links(links)


def diagonal_links(n_src: int, n_tgt: int) -> set[Link]:
    """The diagonal baseline: each word is linked to the word of the other side whose span holds its
    own centre when both sentences are stretched over [0, 1], i.e. source i to target
    ⌊(i + ½)·m / n⌋ and target j to source ⌊(j + ½)·n / m⌋ (the union of both directions). Swapping
    the sides transposes the links, equal lengths give the identity, and every word of both sides is
    linked; the centre (not round(i·m/n)) keeps the last word in range and the ends symmetric."""
    fwd = {(i, (2 * i + 1) * n_tgt // (2 * n_src)) for i in range(n_src)}
    bwd = {((2 * j + 1) * n_src // (2 * n_tgt), j) for j in range(n_tgt)}
    return fwd | bwd


ALIGNERS = dict(zip(METHODS, (argmax_links, itermax_links)))


def check_methods(methods: Sequence[str]) -> None:
    """An XlpError for a method that is not one of ALIGNERS (the task option's values)."""
    unknown = [m for m in methods if m not in ALIGNERS]
    if unknown:
        raise XlpError(f"align: unknown method {unknown[0]!r}; expected one of {', '.join(ALIGNERS)}")


@dataclass(frozen=True)
class Counts:
    """Per-sentence counts |A|, |A∩S|, |A∩P|, |S| (int arrays, one entry a sentence). Corpus scores
    are ratios of their sums, so a bootstrap over sentences resamples entries (`take`)."""

    predicted: np.ndarray
    hit_sure: np.ndarray
    hit_possible: np.ndarray
    sure: np.ndarray

    def __len__(self) -> int:
        return len(self.predicted)

    def take(self, idx: np.ndarray) -> Counts:
        return Counts(self.predicted[idx], self.hit_sure[idx], self.hit_possible[idx], self.sure[idx])

    def scores(self) -> dict[str, float]:
        """Corpus precision, recall, F1 and AER from the summed counts."""
        return {k: float(v) for k, v in scores_from_sums(self.predicted.sum(), self.hit_sure.sum(),
                                                         self.hit_possible.sum(), self.sure.sum()).items()}


def scores_from_sums(predicted: ArrayLike, hit_sure: ArrayLike, hit_possible: ArrayLike,
                     sure: ArrayLike) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and AER from summed counts (scalars, or arrays of e.g. bootstrap sums).
    A zero denominator has a zero numerator (|A∩P| ≤ |A|, |A∩S| ≤ |S|), so that score is 0 (AER 1),
    as in SimAlign's scorer: no predicted links has precision 0, no gold links recall 0."""
    a, a_s, a_p, s = (np.asarray(x, dtype=np.float64) for x in (predicted, hit_sure, hit_possible, sure))
    precision = a_p / np.maximum(a, 1)
    recall = a_s / np.maximum(s, 1)
    total = precision + recall
    f1 = np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1), 0.0)
    aer = 1.0 - (a_s + a_p) / np.maximum(a + s, 1)
    return {"precision": precision, "recall": recall, "f1": f1, "aer": aer}


def score(gold: Sequence[GoldSentence], predicted: Sequence[set[Link]]) -> Counts:
    """Per-sentence counts of predicted links against the gold links."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(predicted)} predicted alignments for {len(gold)} gold sentences")
    rows = np.array([(len(a), len(a & g.sure), len(a & g.possible), len(g.sure)) for g, a in zip(gold, predicted)],
                    dtype=np.int64).reshape(-1, 4)
    return Counts(*(rows[:, c].copy() for c in range(4)))


def diagonal_counts(gold: Sequence[GoldSentence]) -> Counts:
    return score(gold, [diagonal_links(len(g.src), len(g.tgt)) for g in gold])


def align_sentence(src: np.ndarray, tgt: np.ndarray, methods: Sequence[str] = METHODS) -> dict[str, set[Link]]:
    """Per method, the links between one sentence's source word vectors (n_src, d) and target word
    vectors (n_tgt, d). A word whose vector is all zeros (vectors from elsewhere: xlp's extraction reads a word
    with no subword as the unknown token, as SimAlign does) takes no part; its row or column is left out."""
    rows, cols = np.flatnonzero(np.any(src != 0, axis=1)), np.flatnonzero(np.any(tgt != 0, axis=1))
    if not len(rows) or not len(cols):
        return {m: set() for m in methods}
    sim = similarity(src[rows], tgt[cols])
    return {m: {(int(rows[i]), int(cols[j])) for i, j in ALIGNERS[m](sim)} for m in methods}


def score_layers(src: Mapping[int, Sequence[np.ndarray]], tgt: Mapping[int, Sequence[np.ndarray]],
                 gold: Sequence[GoldSentence], methods: Sequence[str] = METHODS) -> dict[int, dict[str, Counts]]:
    """Per layer and method, the counts of aligning each sentence's source word vectors (n_src, d)
    with its target word vectors (n_tgt, d); `src[layer][k]` belongs to `gold[k]`."""
    check_methods(methods)
    out = {}
    for layer in src:
        if len(src[layer]) != len(gold) or len(tgt[layer]) != len(gold):
            raise ValueError(f"layer {layer}: vectors for {len(src[layer])}/{len(tgt[layer])} sentences, "
                             f"gold has {len(gold)}")
        predicted: dict[str, list[set[Link]]] = {m: [] for m in methods}
        for k, g in enumerate(gold):
            s, t = src[layer][k], tgt[layer][k]
            if len(s) != len(g.src) or len(t) != len(g.tgt):
                raise ValueError(f"layer {layer}, sentence {k}: {len(s)}x{len(t)} vectors for "
                                 f"{len(g.src)}x{len(g.tgt)} words")
            for m, links in align_sentence(s, t, methods).items():
                predicted[m].append(links)
        out[layer] = {m: score(gold, predicted[m]) for m in methods}
    return out


def split_sentences(flat: np.ndarray, lengths: Sequence[int]) -> list[np.ndarray]:
    """Cut a (total_words, d) array in sentence and word order into one (n_words, d) array a sentence."""
    return np.split(flat, np.cumsum(lengths)[:-1])
