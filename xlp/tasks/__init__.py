"""The task registry: every built-in task is one module and one line here. A spec may also name a
task defined outside xlp, as `package.module:Class` or as a plugin registered under the entry-point
group `xlp.tasks`; it implements the same interface (xlp/tasks/base.py) and runs like a built-in one."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from xlp.errors import XlpError
from xlp.tasks.align import AlignTask
from xlp.tasks.arc import ArcHeadTask, ArcTask
from xlp.tasks.base import SentenceTask, Task, WordTask
from xlp.tasks.bpc import BpcTask
from xlp.tasks.deprel import DeprelTask
from xlp.tasks.pos import PosTask
from xlp.tasks.pos_control import PosControlTask
from xlp.tasks.retrieval import RetrievalTask
from xlp.tasks.xnli import XnliTask

BUILT_IN: dict[str, Task] = {task.name: task for task in (
    PosTask(), PosControlTask(), ArcTask(), ArcHeadTask(), DeprelTask(),
    RetrievalTask(), BpcTask(), XnliTask(), AlignTask(),
)}
ENTRY_POINT_GROUP = "xlp.tasks"

__all__ = ["BUILT_IN", "SentenceTask", "Task", "WordTask", "get_task", "known_tasks", "resolve_tasks"]


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
    if not isinstance(task, (WordTask, SentenceTask)):
        raise XlpError(f"task {ref!r}: {type(task).__name__} does not implement xlp.tasks.base.WordTask or "
                       "SentenceTask")
    return task


def resolve_tasks(refs: list[str]) -> list[Task]:
    """The spec's tasks, each once, in order."""
    tasks: dict[str, Task] = {}
    for ref in refs:
        task = get_task(ref)
        tasks.setdefault(task.name, task)
    return list(tasks.values())
