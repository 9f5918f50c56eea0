"""The run manifest: a spec with its tasks resolved and their options validated, made once from the YAML (or a
Spec built in code) and handed to pre-flight, the plan, the workers' units, the reducer and `--submit`; written
into the run folder as `spec.json` beside `plan.json` and read back through `load_run`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from xlp.config import Spec, load_spec, spec_from_dict
from xlp.errors import XlpError
from xlp.storage import Store
from xlp.tasks import RunTasks, TaskContext, configure, legacy_keys
from xlp.tasks.base import RunData

SPEC_FILE = "spec.json"
PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class Manifest:
    spec: Spec
    tasks: RunTasks

    def context(self, task: str, run_data: RunData | None = None) -> TaskContext:
        return self.tasks.context(task, self.spec, run_data)

    def to_json(self) -> str:
        """The validated spec: ${VAR}s expanded and defaults filled in as they were here (a head node reads
        the same run), each option section of the run's tasks as its task validated it."""
        raw = json.loads(self.spec.model_dump_json())
        for name in self.tasks.tasks:
            if type(self.tasks.options[name]).model_fields:
                raw[name] = self.tasks.options[name].model_dump(mode="json")
        return json.dumps(raw, indent=1)


def manifest(spec: Spec | Manifest) -> Manifest:
    """A manifest of a spec (one given already stays as it is)."""
    return spec if isinstance(spec, Manifest) else Manifest(spec, configure(spec))


def load_manifest(path: str | Path) -> Manifest:
    """Read a spec file (YAML; JSON: a manifest as `--submit` ships it) and resolve its tasks; any problem is
    an XlpError naming file, line and key."""
    path = Path(path)
    if path.suffix == ".json":
        try:
            return from_json(path.read_text(encoding="utf-8"), str(path))
        except OSError as e:
            raise XlpError(f"cannot read spec {path}: {e.strerror}") from None
    return manifest(load_spec(path, legacy_keys()))


def from_json(text: str, where: str) -> Manifest:
    """A manifest from a run folder's (or a submitted job's) spec.json."""
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise XlpError(f"{where}: not JSON ({e})") from None
    return manifest(spec_from_dict(raw, where, legacy=legacy_keys()))


def run_manifest(store: Store) -> Manifest:
    """The manifest a run folder's driver wrote (spec.json)."""
    if not store.exists(SPEC_FILE):
        raise XlpError(f"{store.path(SPEC_FILE)}: no spec.json; this folder has not been launched")
    return from_json(store.read_bytes(SPEC_FILE).decode(), store.path(SPEC_FILE))


def load_run(store: Store) -> tuple[Manifest, dict]:
    """A launched run's manifest and plan, as its driver wrote them."""
    if not store.exists(PLAN_FILE):
        raise XlpError(f"{store.path(PLAN_FILE)}: no plan.json; this folder has not been launched")
    return run_manifest(store), json.loads(store.read_bytes(PLAN_FILE))
