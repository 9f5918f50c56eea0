"""The ledger: one small JSON record per finished unit (the hash of what produced it, its output
and that output's size). A unit is done when its record's hash matches the plan and its output is
still there with the recorded size; everything else is redone."""

from __future__ import annotations

import json
import time

from xlp.storage import Store

STAGES = ("extract", "probe")


class Ledger:
    def __init__(self, store: Store):
        self.store = store
        self._records: dict[str, dict[str, dict]] = {}
        self._outputs: dict[str, int] = {}
        self.refresh()

    def refresh(self) -> None:
        self._records = {stage: {} for stage in STAGES}
        self._failed = {stage: {} for stage in STAGES}
        for rel in self.store.files("ledger"):
            parts = rel.split("/")
            kind, stage = parts[1], parts[2] if parts[1] == "failed" else parts[1]
            if stage not in STAGES or not rel.endswith(".json"):
                continue
            try:
                rec = json.loads(self.store.read_bytes(rel))
            except (ValueError, OSError):
                continue  # an unreadable record means the unit is redone
            (self._failed if kind == "failed" else self._records)[stage][rec["key"]] = rec
        self._outputs = {**self.store.files("features"), **self.store.files("probes")}

    def records(self, stage: str) -> dict[str, dict]:
        return self._records[stage]

    def failures(self, stage: str) -> dict[str, dict]:
        return self._failed[stage]

    def is_done(self, stage: str, key: str, unit_hash: str, verify: bool = False) -> bool:
        """Recorded with this hash and its output present with the recorded size; with `verify`, the
        output's bytes also match the recorded SHA-256 (reads every output: `xlp launch --verify`)."""
        rec = self._records[stage].get(key)
        if rec is not None and rec.get("dropped"):  # deleted on purpose once every reader was done
            return rec["hash"] == unit_hash
        done = (rec is not None and rec["hash"] == unit_hash
                and self._outputs.get(rec["output"]) == rec["bytes"])
        if done and verify and rec.get("sha256") and self.store.sha256(rec["output"]) != rec["sha256"]:
            self.forget(stage, key)
            return False
        return done

    def output_digests(self, stage: str, keys) -> dict[str, str]:
        """The recorded SHA-256 of these units' outputs, by output path (what a reader checks bytes against)."""
        recs = [self._records[stage].get(k) for k in keys]
        return {r["output"]: r["sha256"] for r in recs if r and r.get("sha256")}

    def forget_output(self, output: str) -> None:
        """Drop the record of whichever unit wrote this output (found changed by a reader), so it is redone."""
        for stage, recs in self._records.items():
            for key in [k for k, r in recs.items() if r.get("output") == output]:
                self.forget(stage, key)

    def drop_output(self, stage: str, key: str) -> None:
        """Delete a finished unit's output (`features: drop`) and record that it was dropped, not lost."""
        rec = {**self._records[stage][key], "dropped": True}
        self.store.delete(rec["output"])
        self.store.write_bytes(self._path(stage, key), json.dumps(rec, sort_keys=True).encode())
        self._records[stage][key] = rec
        self._outputs.pop(rec["output"], None)

    def is_dropped(self, stage: str, key: str) -> bool:
        return bool(self._records[stage].get(key, {}).get("dropped"))

    def forget(self, stage: str, key: str) -> None:
        """Drop a unit's record, so that it is redone."""
        self.store.delete(self._path(stage, key))
        self._records[stage].pop(key, None)

    def _path(self, stage: str, key: str, failed: bool = False) -> str:
        return f"ledger/{'failed/' if failed else ''}{stage}/{key}.json"

    def record(self, stage: str, key: str, unit_hash: str, output: str, nbytes: int, **info) -> None:
        rec = {"key": key, "hash": unit_hash, "output": output, "bytes": nbytes, "finished": time.time(), **info}
        self.store.write_bytes(self._path(stage, key), json.dumps(rec, sort_keys=True).encode())
        self._records[stage][key] = rec
        self._outputs[output] = nbytes
        if key in self._failed[stage]:
            self.store.delete(self._path(stage, key, failed=True))
            del self._failed[stage][key]

    def record_failure(self, stage: str, key: str, unit_hash: str, error: str) -> None:
        rec = {"key": key, "hash": unit_hash, "error": error, "finished": time.time()}
        self.store.write_bytes(self._path(stage, key, failed=True), json.dumps(rec, sort_keys=True).encode())
        self._failed[stage][key] = rec
