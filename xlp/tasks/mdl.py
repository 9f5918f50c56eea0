"""Compression (probe.mdl): the online code of a word task's training labels (xlp/probing/mdl.py) as a curve of
its own, `<task>_mdl`, next to the task's accuracy. Its probe unit writes its rows; the analysis treats it like any
task whose metric is higher-is-better."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from xlp.tasks.base import Task, WordTask, result_row

if TYPE_CHECKING:  # the online code needs torch, which `xlp validate --schema-only` does not load
    from xlp.probing.mdl import OnlineCode

SUFFIX = "_mdl"


class CompressionTask(Task):
    """The compression of the training labels of the word task `of` (the task whose probe a unit fits)."""

    metric = "compression"
    higher_is_better = True

    def __init__(self, of: WordTask):
        self.of = of
        self.name = of.name + SUFFIX
        self.definition = (
            f"minimum description length of {of.name}'s training labels (the online code of Voita & Titov 2020): "
            "the items in a fixed random order, in blocks ending at 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25, 12.5, 25, "
            "50 and 100 % of them, the first block sent with the uniform code (log2 K bits a label), each later "
            f"block with the code of a probe fit (as {of.name}'s, linear or MLP as probe.kind says, with one prior "
            "for every block: the l2 of a probe on all n items, i.e. l2 n / t per item) on all t items before it, "
            "mixed with the "
            "uniform code (weight 1 / (t + 1), so a label not seen yet costs a bounded number of bits); compression = "
            "uniform / online codelength (`uniform_codelength`, `codelength`: bits), baseline 1 (the uniform code). "
            "One row per source (target = source). Its interval resamples the training sentences, each keeping its "
            "labels' codelengths (the probes are not refit).")

    @staticmethod
    def value_from_sums(sums: np.ndarray, count: int) -> np.ndarray:
        return sums[0] / sums[1]  # item_sums: each training sentence's uniform and online bits

    def rows(self, unit, seed: int, code: OnlineCode, sentences: np.ndarray, invariant: bool) -> list[dict]:
        """One row per layer of the unit: its compression, codelengths and per-sentence bits (the items the
        reducer resamples), for the probe seed `seed`; `sentences` (n,) says each training item's sentence."""
        _, inverse = np.unique(sentences, return_inverse=True)
        uniform = np.bincount(inverse, minlength=inverse.max(initial=-1) + 1) * code.uniform_item_bits
        rows = []
        for li, layer in enumerate(unit.layers):
            online = np.bincount(inverse, weights=code.item_bits[li], minlength=len(uniform))
            row = result_row(unit, task=self.name, layer=layer, src=unit.src, tgt=unit.src, seed=seed,
                             metric=self.metric, value=code.compression[li], baseline=1.0,
                             n_train=code.item_bits.shape[1], n_test=len(uniform), invariant=invariant,
                             correct=None, pooling=unit.pooling, item_sums=np.stack([uniform, online]),
                             fit=(code, li))
            rows.append({**row, "codelength": float(code.online[li]), "uniform_codelength": code.uniform})
        return rows
