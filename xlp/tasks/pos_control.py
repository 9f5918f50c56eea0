"""Control task for POS (Hewitt & Liang 2019): every word type gets a fixed random tag, so a probe
can only memorise types. Selectivity = POS accuracy - control accuracy; a probe that scores high on
both measures its own capacity rather than the representation.

The tag of a type is a stable hash of its lowercased form mapped uniformly onto the 17 UPOS tags,
so it is the same in every split, checkpoint and run.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa

from xlp.storage.features import layer_stack
from xlp.tasks.base import WordTask
from xlp.tasks.pos import PosTask

UPOS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
        "PUNCT", "SCONJ", "SYM", "VERB", "X")


def control_tag(form: str) -> str:
    digest = hashlib.blake2b(form.lower().encode(), digest_size=8).digest()
    return UPOS[int.from_bytes(digest, "little") % len(UPOS)]


class PosControlTask(WordTask):
    name = "pos_control"
    metric = "accuracy"
    definition = ("Hewitt & Liang's control task: each word type (lowercased form) gets a fixed tag, a stable hash "
                  "mapped uniformly onto the 17 UPOS tags; selectivity = pos accuracy - control accuracy.")
    needs = ("form",)

    def examples(self, table: pa.Table, layer_columns: list[str], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        forms = table.column("form").to_numpy(zero_copy_only=False)
        return layer_stack(table, layer_columns), np.array([control_tag(f) for f in forms])

    def extra_tables(self, probes: pd.DataFrame) -> dict[str, tuple[str, pd.DataFrame]]:
        """Selectivity: POS accuracy minus this task's, per (step, layer, source, target), averaged over
        seeds; nothing unless POS ran too."""
        keys = ["step", "layer", "src_lang", "tgt_lang"]
        if PosTask.name not in set(probes.get("task", ())):
            return {}
        both = probes[probes.task.isin([PosTask.name, self.name])]
        mean = both.groupby(keys + ["task"]).value.mean().unstack("task")
        out = mean.rename(columns={PosTask.name: "pos", self.name: "control"}).reset_index()
        out["selectivity"] = out["pos"] - out["control"]
        return {"selectivity": ("POS selectivity (accuracy minus control-task accuracy)",
                                out[keys + ["pos", "control", "selectivity"]])}
