"""Word alignment in the manner of SimAlign (Jalili Sabet et al. 2020): no training. The words of a
sentence and of its translation are aligned from the cosine similarity of their vectors at a layer,
and the links are scored against human gold links (sure S and possible P, with S ⊆ P).

Scores follow awesome-align's tools/aer.py and SimAlign's calc_align_score.py: precision =
|A∩P| / |A|, recall = |A∩S| / |S|, AER = 1 − (|A∩S| + |A∩P|) / (|A| + |S|), F1 the harmonic mean of
precision and recall; each a ratio of counts summed over the corpus (not a mean of sentence scores).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from xlp.errors import XlpError
from xlp.hashing import data_files
from xlp.tasks.base import RunData, Runtime, SentenceInputs, SentenceTask, result_row

if TYPE_CHECKING:
    from xlp.config import Spec
    from xlp.models.extract import FeatureExtractor

NAME = "align"
METHODS = ("argmax", "itermax")
BASELINE = "diagonal"
_LINK = re.compile(r"(\d+)([-p])(\d+)")

Link = tuple[int, int]


@dataclass(frozen=True)
class GoldSentence:
    """One sentence pair: whitespace tokens of each side and its gold links, 0-based (source, target)."""

    src: tuple[str, ...]
    tgt: tuple[str, ...]
    sure: frozenset[Link]
    possible: frozenset[Link]  # sure ∪ possible, as the scores define P


# ---- reading gold data ----------------------------------------------------------------------------------

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


def _lines(path: Path) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise XlpError(f"align: cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise XlpError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_gold(text_path: str | Path, gold_path: str | Path, one_indexed: bool = True,
              max_sentences: int | None = None) -> list[GoldSentence]:
    """Sentence pairs (`source ||| target` a line, words split on whitespace) and their links (`i-j`
    sure, `ipj` possible, source index first, 1-based unless `one_indexed` is False), the first
    `max_sentences` of them. Malformed input is an XlpError naming the file and line."""
    text_path, gold_path = Path(text_path), Path(gold_path)
    texts, golds = _lines(text_path), _lines(gold_path)
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
        src, tgt = tuple(sides[0].split()), tuple(sides[1].split())
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


# ---- aligners -----------------------------------------------------------------------------------------

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


ALIGNERS = {"argmax": argmax_links, "itermax": itermax_links}


def check_methods(methods: Sequence[str]) -> None:
    """An XlpError for a method that is not one of ALIGNERS (the task option's values)."""
    unknown = [m for m in methods if m not in ALIGNERS]
    if unknown:
        raise XlpError(f"align: unknown method {unknown[0]!r}; expected one of {', '.join(ALIGNERS)}")


# ---- scores ---------------------------------------------------------------------------------------------

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


# ---- word vectors -> scores -----------------------------------------------------------------------------

def align_sentence(src: np.ndarray, tgt: np.ndarray, methods: Sequence[str] = METHODS) -> dict[str, set[Link]]:
    """Per method, the links between one sentence's source word vectors (n_src, d) and target word
    vectors (n_tgt, d). A word whose vector is zero (the tokenizer gave it no subword) takes no part,
    as in SimAlign, whose words are the subwords' owners; its row or column is left out."""
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



def align_rows(extractor: FeatureExtractor, gold: Sequence[GoldSentence],
               methods: Sequence[str] = METHODS) -> list[dict]:
    """With a loaded FeatureExtractor (its layers and pooling): one row per (layer, method) with
    precision, recall, F1, AER and the number of sentences, plus the diagonal baseline's row at every
    layer (the same scores: it reads no vectors) so each layer's table has what to beat. Both sides of
    every sentence go through the model in one extraction call."""
    check_methods(methods)
    lengths = [len(g.src) for g in gold] + [len(g.tgt) for g in gold]
    vectors = extractor.extract([list(g.src) for g in gold] + [list(g.tgt) for g in gold])
    per_layer = {layer: split_sentences(v, lengths) for layer, v in vectors.items()}
    n = len(gold)
    counts = score_layers({k: v[:n] for k, v in per_layer.items()}, {k: v[n:] for k, v in per_layer.items()},
                          gold, methods)
    baseline = diagonal_counts(gold).scores()
    rows = []
    for layer, by_method in counts.items():
        for method, c in by_method.items():
            rows.append({"layer": layer, "method": method, **c.scores(), "n_sentences": n, "counts": c})
        rows.append({"layer": layer, "method": BASELINE, **baseline, "n_sentences": n})
    return rows


# ---- the task -------------------------------------------------------------------------------------------

def pair_languages(pair: str) -> tuple[str, str]:
    """`enfr` or `en-fr` -> ("en", "fr")."""
    src, sep, tgt = pair.partition("-")
    if not sep:
        src, tgt = pair[:2], pair[2:]
    if not (re.fullmatch(r"[a-z]{2,3}", src) and re.fullmatch(r"[a-z]{2,3}", tgt)):
        raise XlpError(f"alignment.pairs: {pair!r} is not a language pair such as enfr or en-fr")
    return src, tgt


class AlignTask(SentenceTask):
    name = NAME
    metric = "f1"
    reads_ud = False  # its pairs are alignment.pairs
    definition = ("unsupervised word alignment in the manner of SimAlign: each sentence pair's words (the corpus's "
                  "whitespace tokens, with the run's subword pooling) are aligned from the cosine similarity of "
                  "their vectors at a layer, with no training (argmax: links that are each other's best match in "
                  "both directions; itermax: its iterative variant; alignment.method); F1 of precision against "
                  "sure and possible gold links and recall against sure ones, counts summed over the corpus; "
                  "precision, recall and AER in their own columns; baseline = the diagonal aligner (each word to "
                  "the word at the same relative position of the other side).")

    @staticmethod
    def value_from_sums(sums: np.ndarray, count: int) -> np.ndarray:
        return scores_from_sums(*sums)["f1"]  # item_sums: each sentence's |A|, |A∩S|, |A∩P|, |S|

    def describe_grid(self, spec: Spec, langs: list[str] | None) -> str:
        pairs = spec.alignment.pairs
        return f"{len(pairs)} language pairs, source to target ({', '.join(pairs)})"

    def inputs(self, spec: Spec, data: RunData, notes: list[str]) -> SentenceInputs | None:
        """Every gold file is read and checked now (pre-flight); the unit reads the same files again."""
        a = spec.alignment
        check_methods([a.method])
        paths: list[Path] = []
        for pair in a.pairs:
            pair_languages(pair)
            text, gold = (Path(p) for p in a.files[pair]) if pair in a.files else pair_files(a.gold, pair)
            read_gold(text, gold, a.one_indexed, a.max_sentences)
            paths += [text, gold]
        files = data_files(paths)
        return SentenceInputs(langs=tuple(a.pairs), files=tuple(files[p] for p in paths), corpus="gold",
                              options=(("method", a.method), ("one_indexed", a.one_indexed),
                                       ("max_sentences", a.max_sentences), ("pooling", spec.pooling)))

    def rows(self, unit, runtime: Runtime) -> list[dict]:
        """The checkpoint is loaded once for all pairs; both sides of a pair's sentences go through it in
        one extraction, then each layer's alignments are scored."""
        from xlp.models.extract import FeatureExtractor

        o = dict(unit.inputs.options)
        extractor = FeatureExtractor(unit.ckpt, list(unit.layers), o["pooling"], runtime.batch_tokens,
                                     runtime.device, runtime.trust_remote_code, runtime.allow_pickle)
        rows = []
        for k, pair in enumerate(unit.langs):
            text, gold_file = (Path(f.path) for f in unit.inputs.files[2 * k: 2 * k + 2])
            gold = read_gold(text, gold_file, o["one_indexed"], o["max_sentences"])
            src, tgt = pair_languages(pair)
            scored = align_rows(extractor, gold, [o["method"]])
            baseline = next(r["f1"] for r in scored if r["method"] == BASELINE)
            for r in (r for r in scored if r["method"] == o["method"]):
                for seed in unit.seeds:  # no probe: one value, repeated so every task has the same rows
                    row = result_row(unit, task=self.name, layer=r["layer"], src=src, tgt=tgt, seed=seed,
                                     metric=self.metric, value=r["f1"], baseline=baseline, n_train=0,
                                     n_test=len(gold), invariant=True, correct=None, pooling=extractor.pooling,
                                     item_sums=np.stack(astuple(r["counts"])))
                    rows.append({**row, "precision": r["precision"], "recall": r["recall"], "aer": r["aer"],
                                 "method": o["method"]})
        return rows
