"""Bits per character (and per UTF-8 byte): how well the checkpoint's language-model head predicts
each language's test text, normalised by characters so that languages and tokenizers compare.

A masked LM is scored in PASSES masking passes: pass j masks the tokens whose index is j mod PASSES
(about 1 in 7, close to the 15 % masking of pretraining), so every token is predicted exactly once
from a context with the other passes' tokens visible (a pseudo-likelihood). A causal LM is scored
exactly: every token's log-probability given the text before it, with a sliding window
(xlp/models/causal_lm.py). bits = sum of -log2 p(token); bpc = bits / characters of the text the
tokens cover. The two estimators are not comparable with each other; each row names its estimator.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field, model_validator

from xlp.data.conllu import read_part
from xlp.data.hub import Dataset, DatasetSource, DatasetSplit, read_texts
from xlp.data.published import FLORES_PLUS
from xlp.data.text import decode
from xlp.errors import XlpError
from xlp.hashing import data_files
from xlp.tasks.base import Runtime, SentenceInputs, SentenceTask, TaskContext, TaskOptions, seed_rows

if TYPE_CHECKING:
    from xlp.models.checkpoints import Checkpoint

PASSES = 7  # xlp.models.masked_lm's, named here for the definition without importing torch
TEXT = "text"  # the corpus of a unit that reads bpc.text's plain-text files


def read_lines(path: Path, cap: int | None) -> list[str]:
    """The first `cap` non-empty lines of a UTF-8 text file (one text a line, surrounding space removed; a
    byte-order mark and Windows line ends are no text; UTF-16 is refused by file and line)."""
    texts: list[str] = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            line = decode(raw, path, n).strip()
            if line:
                texts.append(line)
                if cap is not None and len(texts) >= cap:
                    break
    if not texts:
        raise XlpError(f"{path}: no text (one text a line)")
    return texts


class BpcOptions(TaskOptions):
    """Where the text comes from: each language's UD test split (default), or plain text, a folder of
    `<lang>.txt` files, one text a line (held-out pretraining text, as the paper's 94 languages), or a dataset
    with one text a row (FLORES+'s layout: a config per language, split devtest, column text); its
    languages are then `task_grid.bpc.languages` and need no treebank."""

    text: str | None = None
    dataset: DatasetSource | None = Field(None, description="FLORES+'s layout: on the hub, or a local copy")
    max_sentences: int | None = Field(None, ge=1, description="texts scored per language at most (bpc runs "
                                      f"{PASSES} passes over each); null: data.max_test_sentences")

    @model_validator(mode="after")
    def _one_source(self) -> BpcOptions:
        if self.text is not None and self.dataset is not None:
            raise ValueError("give `text` (a folder of <lang>.txt) or `dataset`, not both")
        return self


class BpcTask(SentenceTask):
    name = "bpc"
    Options = BpcOptions
    data_command = "text"
    metric = "bpc"
    higher_is_better = False
    definition = (f"bits per character of each language's test text, its UD test split, the lines of bpc.text's "
                  f"<lang>.txt or the rows of bpc.dataset (column bits_per_byte: per UTF-8 byte). A masked "
                  f"LM (estimator masked_pll): {PASSES} masking passes, pass j masks the tokens whose index is j mod "
                  f"{PASSES}, so every token is predicted once with the rest visible. A causal LM (estimator "
                  "causal_exact): every token's exact log-probability given the text before it (a sliding window, "
                  "each token scored once with the longest context that fits). The two estimators are not "
                  "comparable. Bits / characters covered; the row's layer is the model's last (the head reads it); "
                  "baseline = a uniform distribution over the vocabulary.")

    def reads_ud_with(self, options: BpcOptions) -> bool:
        return options.text is None and options.dataset is None

    def inputs(self, ctx: TaskContext, notes: list[str]) -> SentenceInputs | None:
        """Each language's UD test split, or with `bpc.text` its `<lang>.txt` (read and checked now)."""
        langs, cap = ctx.grid()[0], ctx.options.max_sentences or ctx.data.max_test_sentences
        options = ()
        if ctx.options.dataset is not None:
            source = ctx.options.dataset
            ds = Dataset(source, "bpc.dataset")
            notes.append(ds.describe())
            files = {lang: ds.split(ds.config_of(lang, FLORES_PLUS), source.split or "devtest") for lang in langs}
            for part in files.values():
                read_texts(part, source.column("text"), cap, "bpc.dataset")
            corpus, options = TEXT, (("column", source.column("text")),)
        elif ctx.options.text is None:
            files = ctx.run_data.test_files(langs)
            corpus = ctx.data.test_split
        else:
            folder = Path(ctx.options.text)
            if not folder.is_dir():
                raise XlpError(f"bpc.text: {folder} is not a folder")
            paths = {lang: folder / f"{lang}.txt" for lang in langs}
            missing = [p.name for p in paths.values() if not p.is_file()]
            if missing:
                raise XlpError(f"bpc.text: no {', '.join(missing)} in {folder} (one <lang>.txt a language)")
            for path in paths.values():
                read_lines(path, cap)
            digests = data_files(list(paths.values()))
            files, corpus = {lang: digests[p] for lang, p in paths.items()}, TEXT
        return SentenceInputs(langs=tuple(files), files=tuple(files.values()), corpus=corpus,
                              options=(("max_sentences", cap), ("lenient", ctx.data.conllu == "lenient"), *options))

    def describe_grid(self, ctx: TaskContext, langs: list[str] | None) -> str:
        langs = langs or ctx.grid()[0]
        return f"in-language {len(langs)} ({', '.join(langs)}); no cross-lingual pairs"

    @staticmethod
    def value_from_sums(sums: np.ndarray, count: int) -> np.ndarray:
        return sums[0] / sums[1]  # item_sums: each sentence's bits and characters

    def skip(self, ckpt: Checkpoint, ctx: TaskContext) -> str | None:
        from xlp.models.loading import lm_kind

        if lm_kind(ckpt, ctx.trust_remote_code) is None:
            return f"bpc: {ckpt.name} has no language-model head (masked or causal); no bits per character for it"
        return None

    def unit_layers(self, layers: list[int], depth: int) -> tuple[int, ...]:
        return (depth,)

    def rows_per_unit(self, n_langs: int, n_layers: int, cross_lingual: bool) -> int:
        return n_langs

    def rows(self, unit, runtime: Runtime) -> list[dict]:
        from xlp.models.causal_lm import CausalLmScorer
        from xlp.models.loading import lm_kind
        from xlp.models.masked_lm import MlmScorer

        cap, lenient = unit.inputs.option("max_sentences"), unit.inputs.option("lenient")
        causal = lm_kind(unit.ckpt, runtime.trust_remote_code) == "causal"
        how = runtime.model_options()
        scorer = CausalLmScorer(unit.ckpt, **how) if causal else MlmScorer(unit.ckpt, **how)
        rows = []
        for lang, file in zip(unit.langs, unit.inputs.files):
            if isinstance(file, DatasetSplit):
                texts = read_texts(file, unit.inputs.option("column"), cap, "bpc.dataset")
            elif unit.inputs.corpus == TEXT:
                texts = read_lines(Path(file.path), cap)
            else:
                texts = [s.text for s in read_part(file, cap, lenient, None) if s.text]
            if causal:
                scored = scorer.bits(texts)
                bits, chars, nbytes, tokens = scored.bits, scored.chars, scored.bytes, scored.tokens
            else:
                bits, chars, tokens = scorer.bits(texts)
                nbytes = np.array([len(t[: int(c)].encode("utf-8")) for t, c in zip(texts, chars)])
            uniform = np.log2(scorer.vocab_size) * tokens.sum() / chars.sum()  # a model that knows nothing
            rows += seed_rows(unit, task=self.name, layer=unit.layers[0], src=lang, tgt=lang, metric=self.metric,
                              value=bits.sum() / chars.sum(), baseline=float(uniform), n_train=0, n_test=len(bits),
                              correct=None, item_sums=np.stack([bits, chars]),
                              extra={"estimator": "causal_exact" if causal else "masked_pll",
                                     "bits_per_byte": float(bits.sum() / nbytes.sum())})
        return rows
