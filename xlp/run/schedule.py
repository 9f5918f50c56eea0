"""The driver's bookkeeping between Ray calls, each step in time independent of the grid's size: which probe-stage
units wait for which shards (released to fit the moment their training shard is written and whole when their last
one is, not found by scanning every waiting unit after each finished one), and the list of units in flight that
`xlp status` reads (rewritten at most once a second, not once per finished unit)."""

from __future__ import annotations

import json
import time
from collections import OrderedDict, defaultdict

from xlp.run.status import INFLIGHT
from xlp.run.units import ExtractUnit, ProbeUnit, SentenceUnit
from xlp.storage import Store

INFLIGHT_EVERY = 1.0  # seconds: how stale `xlp status`'s list of running units may be while a driver runs


def extraction_order(units: list[ExtractUnit], fit_shards: set[str]) -> OrderedDict:
    """The units to extract by checkpoint, in the order their checkpoints come first; within one, the shards probes
    are fit on first and the largest of those first (by their files' size): the longest fits start earliest and
    run beside the rest of the extraction (longest processing time first), instead of alone at the end."""
    def rank(u: ExtractUnit) -> tuple[bool, int]:
        return (False, -u.data_bytes()) if u.key in fit_shards else (True, 0)

    by_ckpt: OrderedDict = OrderedDict()
    for u in sorted(units, key=rank):
        by_ckpt.setdefault(u.ckpt, []).append(u)
    return by_ckpt


class WaitingProbes:
    """Probe-stage units not yet released, by the extraction units whose shards they still need. A unit is
    released to fit (`fit`) when the shard its probes are fit on exists but a target's does not yet, and whole
    (`ready`) when its last shard is written; or, as failed, when one of its shards fails. Units are released
    in plan order."""

    def __init__(self, units: list[ProbeUnit | SentenceUnit], extracted: set[str]):
        self._units = list(units)
        self._missing: dict[int, set[str]] = {}
        self._fit_missing: dict[int, set[str]] = {}  # the training shards each unit misses, until it is released
        self._by_shard: dict[str, list[int]] = defaultdict(list)
        for i, u in enumerate(self._units):
            missing = {k for k in u.needs if k not in extracted}
            self._missing[i] = missing
            self._fit_missing[i] = {k for k in u.fit_needs if k in missing}
            for k in missing:
                self._by_shard[k].append(i)

    def ready_now(self) -> tuple[list[ProbeUnit | SentenceUnit], list[ProbeUnit]]:
        """(the units whose shards all exist already (sentence units need none), the units that can fit now)."""
        ready = self._release([i for i, missing in self._missing.items() if not missing])
        return ready, self._fits([i for i, missing in self._fit_missing.items() if not missing])

    def extracted(self, key: str) -> tuple[list[ProbeUnit | SentenceUnit], list[ProbeUnit]]:
        """(the units that the shard of extraction unit `key` was the last one missing of, the units it was the
        last one missing of to fit, with targets' shards still to come)."""
        ready, fit = [], []
        for i in self._by_shard.pop(key, ()):
            if i in self._missing:
                self._missing[i].discard(key)
                if not self._missing[i]:
                    ready.append(i)
                elif key in self._fit_missing.get(i, ()):
                    self._fit_missing[i].discard(key)
                    if not self._fit_missing[i]:
                        fit.append(i)
        return self._release(ready), self._fits(fit)

    def failed(self, key: str) -> list[ProbeUnit | SentenceUnit]:
        """The units still waiting that read the shard of extraction unit `key`, which failed."""
        return self._release([i for i in self._by_shard.pop(key, ()) if i in self._missing])

    def _fits(self, indices: list[int]) -> list[ProbeUnit]:
        for i in indices:
            del self._fit_missing[i]
        return [self._units[i] for i in sorted(indices)]

    def _release(self, indices: list[int]) -> list[ProbeUnit | SentenceUnit]:
        for i in indices:
            del self._missing[i]
            self._fit_missing.pop(i, None)
        return [self._units[i] for i in sorted(indices)]


def publish_inflight(store: Store, inflight: dict) -> None:
    """What `xlp status` shows as running: the units submitted and not finished ({ref: (stage, unit, ...)})."""
    units: dict[str, list[str]] = {"extract": [], "probe": []}
    for stage, unit, _ in inflight.values():
        units[stage].append(unit.key)
    store.write_bytes(INFLIGHT, json.dumps({"updated": time.time(), "units": units}).encode())


class InflightFile:
    """status/inflight.json, rewritten when the units in flight have changed, at most every INFLIGHT_EVERY
    seconds: the driver waits for units no longer than until the next rewrite is due."""

    def __init__(self, store: Store):
        self.store, self._at, self._stale = store, float("-inf"), True

    def changed(self) -> None:
        self._stale = True

    def due_in(self) -> float | None:
        """Seconds until the file is due to be rewritten; None while it is current."""
        return max(0.0, self._at + INFLIGHT_EVERY - time.monotonic()) if self._stale else None

    def publish(self, inflight: dict) -> None:
        if self._stale and time.monotonic() >= self._at + INFLIGHT_EVERY:
            publish_inflight(self.store, inflight)
            self._at, self._stale = time.monotonic(), False
