"""How a run uses the cluster's cores: what Ray reserves for extraction actors, probe tasks and sentence tasks,
and how many torch threads an extraction actor and a probe's fit run with.

On a CPU node (`gpus_per_extractor: 0`) with `cpus_per_extractor` left unset, an extraction actor reserves one
CPU and runs each batch with that one thread plus its share of its node's CPUs that nothing holds (Ray's view,
asked at most twice a second), and a probe fit on a training shard of EARLY_FIT_ROWS items or more does the same
before each L-BFGS step: the idle CPUs are shared in proportion to what each holds (`share_threads`), so before
any probe can run the extractor has every core, as training shards arrive the fits reserve cores and the next
batches run with fewer threads, and the last fits take the cores extraction leaves; no core is asked for two
threads at once. With `cpus_per_extractor` set, or on a GPU node, everything runs with the CPUs Ray gives it.
`extractors` actors split the units: one per checkpoint, and an actor with no checkpoint left shares one that
still has units (the driver's feed)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from xlp.config import ClusterSpec

# a probe unit fits before its targets' shards exist only on a training shard of this many items or more: a fit on
# fewer takes milliseconds, less than a second task costs to schedule
EARLY_FIT_ROWS = 1000


@dataclass(frozen=True)
class Resources:
    actors: int  # extraction actors
    actor_cpus: float  # CPUs Ray reserves for each (and for each sentence-task unit, which runs the model too)
    actor_gpus: float
    probe_cpus: float
    probe_gpus: float
    adaptive: bool  # CPU extractors that also take their node's idle CPUs, batch by batch

    @property
    def extractor_threads(self) -> int:
        """An extractor's own threads: the CPUs Ray reserves for it."""
        return max(1, int(self.actor_cpus))

    @property
    def fit_cpus(self) -> int:
        """A big probe fit's own threads, to which it adds its share of its node's idle CPUs; 0 where fits do not
        share (reservations set by hand, or probes on GPUs)."""
        return max(1, int(self.probe_cpus)) if self.adaptive and not self.probe_gpus else 0

    def describe(self, cpus: float | None) -> list[tuple[str, str, str]]:
        """What `xlp validate` prints: (dimension, size, values) rows of the plan for a cluster of `cpus` CPUs
        (None: not known before Ray starts)."""
        total = f"{cpus:g}" if cpus else "the cluster's"
        if self.adaptive:
            threads = (f"1 + its share of the node's idle CPUs, set per batch (up to "
                       f"{int(cpus // self.actors) if cpus else 'all'} while no probe can run)")
        else:
            threads = f"{self.extractor_threads} (the CPUs Ray gives it)"
        probes = f"{int(cpus // self.probe_cpus)}" if cpus else "all"
        gpu = f", {self.actor_gpus:g} GPU" if self.actor_gpus else ""
        return [("extractors", str(self.actors), f"{self.actor_cpus:g} CPU reserved{gpu} each, torch threads "
                 f"{threads}; two units at a time (one on the model, the last one's shard being written); an "
                 f"extractor with no checkpoint left shares one with units not yet sent; {total} CPUs in all"),
                ("probes at once", probes, f"{self.probe_cpus:g} CPU each once extraction ends, and before on the "
                 f"CPUs the extractors do not hold; a probe on {EARLY_FIT_ROWS:,} training items or more fits as "
                 "soon as its training shard exists and scores once its targets' shards do, one on fewer once all "
                 "its shards exist" + ("; a fit's threads: its CPUs plus its share of the node's idle ones, set per "
                                       "L-BFGS step" if self.adaptive else ""))]


def share_threads(own: int, idle: float, node_cpus: float) -> int:
    """Torch threads for a task holding `own` of its node's CPUs: those, plus its share of the node's idle CPUs in
    proportion to what it holds among all that is held there (every extractor and fit on the node takes its share
    the same way, so together they ask for the node's cores and no more); never more than the node has."""
    held = max(float(own), node_cpus - idle)
    return max(own, min(int(node_cpus), own + int(max(0.0, idle) * own / held)))


@dataclass(frozen=True)
class ThreadShare:
    """What an adaptive task on `node` holding `own` CPUs may use for its next step (`share_threads`)."""
    own: int
    node: str | None
    node_cpus: float

    def threads(self, idle: IdleCpus) -> int:
        return share_threads(self.own, idle().get(self.node, 0.0), self.node_cpus)

    def apply(self, idle: IdleCpus) -> int:
        """Set torch's threads to `threads` (where they differ) and return them."""
        import torch

        n = self.threads(idle)
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
        return n


@contextmanager
def fit_threads(own: int) -> Iterator[set[int]]:
    """In a Ray task: before each L-BFGS step of the fits inside, torch's threads are set to `own` plus the task's
    share of its node's idle CPUs (`share_threads`); yields the set of thread counts used. The worker's count is
    restored after (it runs the next task with it)."""
    import ray
    import torch

    from xlp.probing.lbfgs import between_steps

    node = ray.get_runtime_context().get_node_id()
    share = ThreadShare(own, node, node_cpus().get(node, own))
    idle, before, used = IdleCpus(), torch.get_num_threads(), set()
    try:
        with between_steps(lambda: used.add(share.apply(idle))):
            yield used
    finally:
        torch.set_num_threads(before)


def warm_workers(res: Resources, actors: int, warm) -> None:
    """Start worker processes for probe tasks and their imports before a probe can run (the first fits wait for a
    training shard; the CPUs the extractors hold free up when extraction ends), so a probe does not wait seconds
    for a new process's imports at that moment. `warm(background)` is a Ray task with no CPUs that imports what
    probe tasks run; Ray keeps the idle worker it ran in for the next task. All are asked for at once (Ray starts
    the extractors' processes first: they were asked for first): a worker for each probe the CPUs no extractor
    holds imports at once, one for each probe the extractors' CPUs can run once extraction ends imports at idle
    priority (a worker started mid-run took ~3 core-seconds from the one-thread extraction and the fit beside it).
    On a cluster of one node only: on several, Ray puts each worker where it likes, not where the probes will run."""
    cpus = node_cpus()
    if len(cpus) != 1:
        return
    held = actors * res.actor_cpus
    for slots, background in ((next(iter(cpus.values())) - held, False), (held, True)):
        for _ in range(int(slots // res.probe_cpus)):
            warm.remote(background)


def plan_resources(cluster: ClusterSpec, units: int) -> Resources:
    """The run's reservations for `units` extraction units still to do (actors share a checkpoint's units when
    there are fewer checkpoints than actors)."""
    adaptive = cluster.cpus_per_extractor is None and cluster.gpus_per_extractor == 0
    return Resources(actors=max(1, min(cluster.extractors, units)), actor_cpus=cluster.cpus_per_extractor or 1,
                     actor_gpus=cluster.gpus_per_extractor, probe_cpus=cluster.cpus_per_probe,
                     probe_gpus=cluster.gpus_per_probe, adaptive=adaptive)


def local_cpus(cluster: ClusterSpec) -> float | None:
    """The CPUs of the local Ray node a run without an address starts (None on a cluster: Ray knows)."""
    if cluster.address or os.environ.get("RAY_ADDRESS"):
        return None
    return float(cluster.num_cpus or os.cpu_count() or 1)


def node_cpus() -> dict[str, float]:
    """Each live Ray node's CPUs."""
    import ray

    return {n["NodeID"]: n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")}


def idle_cpus_by_node() -> dict[str, float]:
    """Each Ray node's CPUs that nothing holds now (Ray's view, refreshed as reservations change)."""
    from ray._private.state import available_resources_per_node

    return {node: res.get("CPU", 0.0) for node, res in available_resources_per_node().items()}


class IdleCpus:
    """`idle_cpus_by_node`, asked of Ray at most every `every` seconds (a call to its control store costs
    milliseconds; the driver would make one per extraction unit sent)."""

    def __init__(self, every: float = 0.5):
        self.every, self._at, self._last = every, float("-inf"), {}

    def __call__(self) -> dict[str, float]:
        if time.monotonic() - self._at >= self.every:
            self._last, self._at = idle_cpus_by_node(), time.monotonic()
        return self._last
