"""A probe worker's warm-up (xlp.run.resources.warm_workers): a Ray task with no CPUs that imports what probe tasks
run, after which Ray keeps its worker idle for the next task. This module imports nothing heavy, so that with
`background` all of the imports (torch's first) run at idle priority: Ray imports a task's module in the worker's
main thread before it runs the task."""

from __future__ import annotations

import os
import threading


def warm_worker(background: bool = False) -> None:
    """Import xlp.run.probe_work and what it leaves to a task (`probe_work.warmed_up`). With `background`, in a
    thread of idle priority (Linux's SCHED_IDLE: on a core nothing else wants; the worker's tasks keep theirs),
    and the task ends when they are done, so Ray sends this worker no probe before it is warm."""
    if not background:
        _imports()
        return
    thread = threading.Thread(target=_idle_imports)
    thread.start()
    thread.join()


def _idle_imports() -> None:
    if hasattr(os, "SCHED_IDLE"):  # this thread only
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    _imports()


def _imports() -> None:
    from xlp.run.probe_work import warmed_up

    warmed_up()
