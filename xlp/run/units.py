"""Units of work and their identity. A unit carries everything its worker reads (resolved files,
caps, settings), and `Unit.hash` is computed from all of its fields in one place, so nothing a worker
reads can be left out of the hash the ledger compares. Checkpoints count by content, data files by
their SHA-256 and tasks by name, so a series or data folder that moved is not redone."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, fields, is_dataclass
from functools import cached_property
from typing import ClassVar

from pydantic import BaseModel

from xlp.config import ProbeSpec
from xlp.hashing import DataFile
from xlp.models.checkpoints import Checkpoint
from xlp.storage.features import shard_path
from xlp.tasks.base import FeatureTask, SentenceInputs, SentenceTask, Task
from xlp.version import __version__


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def probe_output(key: str) -> str:
    """Where a probe-stage unit (probe or sentence task) writes its rows."""
    return f"probes/{key}/part-0.parquet"


def _hashable(value):
    if isinstance(value, Checkpoint):
        return value.identity()
    if isinstance(value, DataFile):
        return value.sha256
    if isinstance(value, Task):
        return value.name
    if isinstance(value, BaseModel):
        defaults = type(value).model_fields
        later = {k for k in getattr(value, "HASHED_WHEN_SET", ()) if getattr(value, k) == defaults[k].default}
        return value.model_dump(exclude=later)
    if is_dataclass(value):
        return {f.name: _hashable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (tuple, list)):
        return [_hashable(v) for v in value]
    return value


class Unit:
    stage: ClassVar[str]

    @cached_property
    def hash(self) -> str:
        """The hash of every field (what the unit reads and how), the unit's kind and xlp's version. A field
        that defaults to None counts only when set, so a field added that way keeps the hashes of the units
        of runs made before it existed (and their outputs are not redone)."""
        unset = {f.name for f in fields(self) if f.default is None and getattr(self, f.name) is None}
        own = {k: v for k, v in _hashable(self).items() if k not in unset}
        return digest({"unit": type(self).__name__, "code": __version__, **own})

    @property
    def output(self) -> str:
        return probe_output(self.key)


@dataclass(frozen=True)
class ExtractUnit(Unit):
    """Word features of one language's split under one checkpoint: a Parquet shard."""
    stage: ClassVar[str] = "extract"
    ckpt: Checkpoint
    lang: str
    split: str
    file: DataFile | tuple[DataFile, ...]  # the split's file, or its parts (hashed as the list of their digests)
    max_sentences: int | None
    lenient: bool  # skip malformed sentences (data.conllu: lenient)
    layers: tuple[int, ...]
    pooling: str
    dtype: str
    part: tuple[str, float] | None = None  # one side of a test split cut in two (data.split_test)
    word_mapping: int = 2  # xlp/models/words.py's rule, raised when it changes so features are redone

    @property
    def key(self) -> str:
        return f"step={self.ckpt.step}/lang={self.lang}/split={self.split}"

    @property
    def output(self) -> str:
        return shard_path(self.ckpt.step, self.lang, self.split)

    def data_bytes(self) -> int:
        """The size of the split's file(s) now (0 where one is gone): how much the unit reads, roughly."""
        files = self.file if isinstance(self.file, tuple) else (self.file,)
        return sum(os.stat(f.path).st_size if os.path.exists(f.path) else 0 for f in files)


@dataclass(frozen=True)
class ProbeUnit(Unit):
    """The probes of one source language under one checkpoint: every layer in the unit, every seed,
    scored on every target. The first task's probe is fit; the others score with it (arc, arc_uas)."""
    stage: ClassVar[str] = "probe"
    ckpt: Checkpoint
    tasks: tuple[FeatureTask, ...]
    layers: tuple[int, ...]
    src: str
    pooling: str  # of the word features it reads (recorded in its rows)
    train_split: str
    targets: tuple[tuple[str, str], ...]  # (language, test split)
    probe: ProbeSpec
    needs: tuple[str, ...]  # extraction unit keys, the training shard's first
    inputs: tuple[str, ...]  # their hashes: the shards' identity
    options: tuple[tuple[str, str], ...] | None = None  # (task, its options as JSON) for tasks that have options
    online_code: str | None = None  # with probe.mdl: the definition of the code its rows give (mdl.definition)

    @property
    def task(self) -> str:
        return "+".join(t.name for t in self.tasks)

    @property
    def fit_needs(self) -> tuple[str, ...]:
        """The extraction unit whose shard the probes are fit on: the fit can start before the targets' shards
        exist."""
        return self.needs[:1]

    def configured_tasks(self) -> tuple[FeatureTask, ...]:
        """The unit's tasks with the run's options they were planned with."""
        given = dict(self.options or ())
        return tuple(t.configured(t.Options.model_validate_json(given[t.name])) if t.name in given else t
                     for t in self.tasks)

    @property
    def key(self) -> str:
        return f"step={self.ckpt.step}/task={self.task}/layers={'_'.join(map(str, self.layers))}/src={self.src}"


@dataclass(frozen=True)
class SentenceUnit(Unit):
    """A task on whole texts that runs the model itself, for one checkpoint and all its languages."""
    stage: ClassVar[str] = "probe"
    ckpt: Checkpoint
    sentence_task: SentenceTask
    layers: tuple[int, ...]
    inputs: SentenceInputs
    seeds: tuple[int, ...]
    needs: ClassVar[tuple[str, ...]] = ()  # no extraction unit to wait for
    fit_needs: ClassVar[tuple[str, ...]] = ()

    @property
    def task(self) -> str:
        return self.sentence_task.name

    @property
    def langs(self) -> tuple[str, ...]:
        return self.inputs.langs

    @property
    def key(self) -> str:
        return f"step={self.ckpt.step}/task={self.task}/corpus={self.inputs.corpus}"
