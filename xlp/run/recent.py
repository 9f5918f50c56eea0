"""What a long-lived worker process read lately, kept for its next units. Every probe unit of a checkpoint scores
on the same test shards (each source on every target), and an extraction actor reads each split's file once per
checkpoint: without this, a worker reads and parses the same file again for every unit (at the paper's grid
shape, 18 times per test shard and 39 times per treebank file). A file is read again when its size or
modification time changed, and a shard is still checked against the ledger's digest when it is read."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import pyarrow as pa

from xlp.data.conllu import Sentence, read_part, split_paths
from xlp.storage import Store

V = TypeVar("V")

SHARD_BYTES = 128 * 2 ** 20  # per worker process: the test shards of a checkpoint at the paper's grid shape
SPLIT_WORDS = 200_000  # per extraction actor: words of parsed treebank splits


class Recent(Generic[V]):
    """Values by key, at most `budget` of `cost` in all, the least recently used dropped first; a value that
    costs more than `most` (default: the budget) is not kept."""

    def __init__(self, budget: int, cost: Callable[[V], int]):
        self.budget, self.cost = budget, cost
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._total = 0

    def get(self, key: Hashable, make: Callable[[], V], most: int | None = None) -> V:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key][0]
        value = make()
        cost = self.cost(value)
        if cost <= (self.budget if most is None else min(most, self.budget)):
            self._items[key] = (value, cost)
            self._total += cost
            while self._total > self.budget:
                self._total -= self._items.popitem(last=False)[1][1]
        return value


_shards: Recent[pa.Table] = Recent(SHARD_BYTES, lambda t: t.nbytes)
_splits: Recent[list[Sentence]] = Recent(SPLIT_WORDS, lambda s: sum(len(x.forms) for x in s))


def recent_table(store: Store, rel: str, columns: list[str], sha256: str | None, share: int = 1) -> pa.Table:
    """`store.read_table(rel, columns, sha256)`, or the table this process read from the same file (same path,
    size and modification time, same digest expected) the last time. A unit that reads `share` such tables in
    turn keeps them only if they all fit (else each would push out the one its next unit reads first)."""
    info = store.fs.get_file_info(store.path(rel))
    key = (store.path(rel), info.size, info.mtime_ns, sha256, tuple(columns))
    return _shards.get(key, lambda: store.read_table(rel, columns=columns, sha256=sha256), SHARD_BYTES // share)


def recent_split(files, max_sentences: int | None, lenient: bool, part: tuple[str, float] | None) -> list[Sentence]:
    """`read_part(files, max_sentences, lenient, part)`, or what this process parsed of the same files (each
    with the same size and modification time) the last time. The sentences are shared: read them only."""
    try:
        stamps = tuple((str(p), (s := os.stat(p)).st_size, s.st_mtime_ns) for p in split_paths(files))
    except OSError:  # read_part says which file, and why
        return read_part(files, max_sentences, lenient, part)
    return _splits.get((stamps, max_sentences, lenient, part), lambda: read_part(files, max_sentences, lenient, part))
