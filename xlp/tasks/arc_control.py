"""Control tasks for arcs and relations (after Hewitt & Liang 2019; xlp/tasks/control.py): each word type attaches
to a fixed relative position, drawn from the training arcs' head offsets and clipped to the sentence (`arc_control`;
`arc_uas_control` selects each dependent's head with that probe and is scored against those control heads), or gets
one fixed relation, drawn from the training arcs' relations. They read the same pair features as `arc` and
`deprel`."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from xlp.probing.pairs import arcs_and_non_arcs, pair_features, sentence_rows
from xlp.tasks.arc import ArcHeadTask, ArcTask
from xlp.tasks.control import ControlTask
from xlp.tasks.deprel import DeprelTask, universal_relations


def _forms(table: pa.Table) -> np.ndarray:
    return table.column("form").to_numpy(zero_copy_only=False)


class ArcControlTask(ControlTask, ArcTask):
    name = "arc_control"
    controls = ArcTask.name
    selectivity_table = "selectivity_arc"
    definition = ("control task of `arc`: each word type (lowercased form) attaches to one fixed relative position, "
                  "drawn from the head offsets of the probe's training arcs by a hash of the type keyed by "
                  "`arc_control.seed`, clipped to the sentence (a dependent at the edge takes its neighbour); every "
                  "word with a head is a dependent, against one non-arc as in `arc`; balanced accuracy; selectivity "
                  "= arc - control.")
    needs = ("sent_idx", "word_id", "head", "form")

    def outcomes(self, table: pa.Table) -> np.ndarray:
        head_row, _, _ = sentence_rows(table)
        dep = np.flatnonzero(head_row >= 0)
        return head_row[dep] - dep

    def control_heads(self, table: pa.Table) -> np.ndarray:
        """Each word's control head row (-1 where the gold tree has its root)."""
        head_row, start, lengths = sentence_rows(table)
        dep = np.flatnonzero(head_row >= 0)
        at = dep - start[dep]
        pos = np.clip(at + self.draw(_forms(table)[dep], table), 0, lengths[dep] - 1)
        pos = np.where(pos == at, np.where(at == 0, 1, at - 1), pos)  # clipped onto itself: the inner neighbour
        heads = np.full(len(head_row), -1)
        heads[dep] = start[dep] + pos
        return heads

    def examples(self, table: pa.Table, layer_columns: list[str], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        heads, deps, labels = arcs_and_non_arcs(table, seed, self.control_heads(table))
        return pair_features(table, layer_columns, heads, deps), labels


class ArcHeadControlTask(ArcControlTask, ArcHeadTask):
    """Head selection as `arc_uas`, with the `arc_control` probe, against each dependent's control head."""
    name = "arc_uas_control"
    metric = "uas"
    controls = ArcHeadTask.name
    selectivity_table = "selectivity_arc_uas"
    fit_with = ArcControlTask.name  # the same probe: with both tasks in a run it is fit once
    definition = ("control task of `arc_uas`: the probe of `arc_control` (fit on each word type's fixed relative "
                  "position as its head, against one non-arc each) chooses each dependent's head among the other "
                  "words of its sentence as `arc_uas` does; UAS against the control heads (the same draw, keyed by "
                  "`arc_uas_control.seed`); baseline = a uniformly random head; selectivity = arc_uas - control.")

    def heads_to_find(self, table: pa.Table) -> np.ndarray:
        return self.control_heads(table)


class DeprelControlTask(ControlTask, DeprelTask):
    name = "deprel_control"
    controls = DeprelTask.name
    selectivity_table = "selectivity_deprel"
    definition = ("control task of `deprel`: the gold arcs' pair features, each labelled with one fixed relation per "
                  "dependent's word type (lowercased form), drawn from the universal relations of the probe's "
                  "training arcs by a hash of the type keyed by `deprel_control.seed`; accuracy; selectivity = "
                  "deprel - control.")
    needs = ("sent_idx", "word_id", "head", "deprel", "form")

    def outcomes(self, table: pa.Table) -> np.ndarray:
        head_row, _, _ = sentence_rows(table)
        return universal_relations(table, np.flatnonzero(head_row >= 0))

    def examples(self, table: pa.Table, layer_columns: list[str], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        head_row, _, _ = sentence_rows(table)
        dep = np.flatnonzero(head_row >= 0)
        return pair_features(table, layer_columns, head_row[dep], dep), self.draw(_forms(table)[dep], table)
