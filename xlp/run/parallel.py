"""The reducer's curves and the report's figures as Ray tasks, when a Ray session is open: each part of the work
is computed exactly as it would be in the driver, so the results are the same bytes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import pandas as pd

from xlp.analysis.reduce import reduce
from xlp.analysis.results import Results
from xlp.config import AnalysisSpec
from xlp.tasks.base import Task

T = TypeVar("T")
R = TypeVar("R")


def _call(fn: Callable[[T], R], item: T) -> R:
    return fn(item)


def ray_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """fn over items, one Ray task (1 CPU) each, results in the items' order; here when no Ray session is open.
    No more tasks are in flight than the cluster has CPUs: for each task queued beyond its idle workers, Ray starts
    another worker process (0.3-0.6 s of a core each on a small node, beside tasks that take a fraction of a
    second)."""
    import ray

    if not ray.is_initialized():
        return [fn(x) for x in items]
    task = ray.remote(_call).options(num_cpus=1, max_retries=2)
    shared = ray.put(fn)  # once, not once per item
    slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
    out: list = [None] * len(items)
    running: dict = {}  # ref -> the item's index
    for i, x in enumerate(items):
        if len(running) >= slots:
            done, _ = ray.wait(list(running), num_returns=1)
            out[running.pop(done[0])] = ray.get(done[0])
        running[task.remote(shared, x)] = i
    for ref, i in running.items():
        out[i] = ray.get(ref)
    return out


def parallel_reduce(probes: pd.DataFrame, analysis: AnalysisSpec, tasks: dict[str, Task]) -> Results:
    """`analysis.reduce.reduce` with the curves' parts as Ray tasks (in the driver without a Ray session)."""
    return reduce(probes, analysis, tasks, map_parts=ray_map)
