"""The task registry: every built-in task is one module and one line here. A spec may also name a
task defined outside xlp, as `package.module:Class` or as a plugin registered under the entry-point
group `xlp.tasks`; it implements the same interface (xlp/tasks/base.py) and runs like a built-in one."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points

from pydantic import ValidationError

from xlp.config import Spec
from xlp.config.source import UNKNOWN_KEY
from xlp.errors import XlpError
from xlp.tasks.align import AlignTask
from xlp.tasks.arc import ArcHeadTask, ArcTask
from xlp.tasks.arc_control import ArcControlTask, ArcHeadControlTask, DeprelControlTask
from xlp.tasks.base import FeatureTask, OwnProbeTask, RunData, SentenceTask, Task, TaskContext, TaskOptions, WordTask
from xlp.tasks.bpc import BpcTask
from xlp.tasks.control import ControlTask
from xlp.tasks.deprel import DeprelTask
from xlp.tasks.mdl import CompressionTask
from xlp.tasks.pos import PosTask
from xlp.tasks.pos_control import PosControlTask
from xlp.tasks.retrieval import RetrievalTask
from xlp.tasks.structural import DepthTask, DistanceTask
from xlp.tasks.xnli import XnliTask

BUILT_IN: dict[str, Task] = {task.name: task for task in (
    PosTask(), PosControlTask(), ArcTask(), ArcHeadTask(), DeprelTask(), ArcControlTask(), ArcHeadControlTask(),
    DeprelControlTask(), RetrievalTask(), BpcTask(), XnliTask(), AlignTask(), DistanceTask(), DepthTask(),
)}
DEFAULT_TASKS = (PosTask.name,)  # a spec that names no task
ENTRY_POINT_GROUP = "xlp.tasks"

__all__ = ["BUILT_IN", "FeatureTask", "OwnProbeTask", "RunTasks", "SentenceTask", "Task", "TaskContext", "TaskOptions",
           "WordTask", "configure", "get_task", "known_tasks", "legacy_keys"]


def known_tasks() -> list[str]:
    """Built-in tasks and installed plugins, by name."""
    return sorted({*BUILT_IN, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})


def get_task(ref: str) -> Task:
    """A task by its name (built-in or an installed plugin) or by `package.module:Class`."""
    if ref in BUILT_IN:
        return BUILT_IN[ref]
    plugin = next((ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == ref), None)
    if plugin is None and ":" not in ref:
        raise XlpError(f"unknown task {ref!r}; known: {', '.join(known_tasks())}, or a `package.module:Class`")
    try:
        if plugin is not None:
            cls = plugin.load()
        else:
            module, _, attr = ref.partition(":")
            cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise XlpError(f"task {ref!r}: cannot import it ({e}); is its package installed or on PYTHONPATH?") from None
    task = cls() if isinstance(cls, type) else cls
    if not isinstance(task, (WordTask, OwnProbeTask, SentenceTask)):
        raise XlpError(f"task {ref!r}: {type(task).__name__} does not implement xlp.tasks.base.WordTask, "
                       "OwnProbeTask or SentenceTask")
    return task


@dataclass(frozen=True)
class RunTasks:
    """A run's tasks, resolved once, each with its validated options; what every layer below the run gets."""
    tasks: dict[str, Task]
    options: dict[str, TaskOptions]
    mdl: bool = False  # probe.mdl: each probe's training labels' compression is a curve too

    def __iter__(self):
        return iter(self.tasks.values())

    def configured(self) -> dict[str, Task]:
        """Each task of the run with its options (what its definition and examples read); with probe.mdl, each
        fitted word task's compression right after it (not the structural probes')."""
        out: dict[str, Task] = {}
        for name, task in self.tasks.items():
            out[name] = task.configured(self.options[name])
            # a task that fits its own probe (structural probes) has no labels to code
            if self.mdl and isinstance(task, WordTask) and task.fit_with not in self.tasks:
                compression = CompressionTask(out[name])
                out[compression.name] = compression
        return out

    def context(self, name: str, spec: Spec, run_data: RunData | None = None) -> TaskContext:
        """What task `name` sees of the run: its options and the parts of the spec a task may read."""
        return TaskContext(name=name, options=self.options[name], data=spec.data, probe=spec.probe,
                           pooling=spec.pooling, cross_lingual=spec.cross_lingual, grid_entry=spec.task_grid.get(name),
                           trust_remote_code=spec.trust_remote_code, run_data=run_data)


def legacy_keys() -> dict[tuple, tuple]:
    """Where older specs wrote built-in tasks' options (old key -> key now), for the spec reader."""
    return {tuple(old.split(".")): (task.name, *([inner] if inner else []))
            for task in BUILT_IN.values() for old, inner in task.legacy_keys.items()}


def configure(spec: Spec) -> RunTasks:
    """Resolve the spec's tasks and validate each one's options (its section, under its name); a section
    that no task of the run and no built-in task owns is an unknown key. Errors name file, line and key."""
    src = spec.source
    tasks: dict[str, Task] = {}
    for i, ref in enumerate(spec.tasks or DEFAULT_TASKS):
        try:
            task = get_task(ref)
        except XlpError as e:
            raise src.key_error(("tasks", i), str(e)) from None
        tasks.setdefault(task.name, task)
    owners = {**BUILT_IN, **tasks}
    for key in spec.model_extra or {}:
        if key not in owners:
            raise src.key_error((key,), UNKNOWN_KEY)
    options = {}
    for name, task in owners.items():
        try:
            options[name] = task.Options.model_validate(spec.section(name))
        except ValidationError as e:
            raise src.error(e, prefix=(name,)) from None
    for name, task in tasks.items():  # a control scored with another's probe: the outcomes that probe was fit on
        owner = task.fit_with if isinstance(task, ControlTask) else None
        if owner in tasks and options[name] != options[owner]:
            raise src.key_error((name,), f"must equal {owner}'s options ({options[owner].model_dump()}): {name} "
                                f"scores with {owner}'s probe, fit on the control outcomes they draw")
    for name, g in spec.task_grid.items():
        if name not in owners:
            raise src.key_error(("task_grid", name), f"no task {name!r} in this run")
        if not owners[name].reads_ud_with(options[name]):
            continue
        for key in ("languages", "sources", "targets"):
            missing = [lang for lang in getattr(g, key) or [] if lang not in spec.data.languages]
            if missing:
                raise src.key_error(("task_grid", name, key), f"{missing} not in data.languages")
    return RunTasks(tasks, {name: options[name] for name in owners}, mdl=spec.probe.mdl)
