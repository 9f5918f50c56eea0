"""The Ray driver: extraction on actors (each loads a checkpoint once), probes as CPU tasks that
start as soon as their shards exist (a large one's fit as soon as its training shard does), every finished
unit recorded in the ledger, then the reducer."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from xlp.config import Spec
from xlp.errors import ShardChecksumError, XlpError
from xlp.run.ledger import Ledger
from xlp.run.lock import run_lock
from xlp.run.manifest import PLAN_FILE, SPEC_FILE, Manifest, manifest
from xlp.run.plan import Plan, SentenceUnit, make_plan
from xlp.run.ray_session import ray_session
from xlp.run.reduce import no_subword_notes, reduce_run
from xlp.run.resources import EARLY_FIT_ROWS, Resources, ThreadShare, node_cpus, plan_resources, warm_workers
from xlp.run.schedule import InflightFile, WaitingProbes, extraction_order
from xlp.run.status import INFLIGHT
from xlp.storage import Store
from xlp.tasks.base import Runtime


@dataclass
class LaunchResult:
    plan: Plan
    extracted: int = 0
    probed: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    no_subword: list[str] = field(default_factory=list)  # words or texts read as the unknown token, per language

    def summary(self, output: str) -> dict:
        return {"run": output, "extracted": self.extracted, "probed": self.probed, "skipped_done": self.skipped,
                "failed": self.failed, "seconds": round(self.seconds, 2), "results": f"{output}/results",
                "report": f"{output}/report/index.html", "no_subword": self.no_subword}


def _error_text(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    return f"{type(cause).__name__}: {cause}" if not isinstance(cause, XlpError) else str(cause)


def launch(spec: Spec | Manifest, console: Console | None = None, quiet: bool = False, address: str | None = None,
           events: Callable[[dict], None] | None = None, verify: bool = False) -> LaunchResult:
    """Run (or resume) the whole grid; redo only units the ledger does not show as done.

    Progress: Rich bars per stage on `console` unless quiet; `events` gets one dict per finished
    unit and per stage (for `xlp launch --json`)."""
    start = time.time()
    console = console or Console(stderr=True)
    run = manifest(spec)
    if run.spec.pretrain is not None:  # build the checkpoint series first if it is not there yet
        from xlp.models.replica import pretrain

        pretrain(run.spec.pretrain, console=console, quiet=quiet)
    store = Store(run.spec.output)
    plan = make_plan(run)
    with run_lock(store):
        return _launch(run, plan, store, console, quiet, address, start, events or (lambda _: None), verify)


def _launch(run: Manifest, plan, store, console, quiet, address, start, emit, verify=False) -> LaunchResult:
    spec = run.spec
    planned = plan.to_dict()
    store.write_bytes(PLAN_FILE, json.dumps(planned, indent=1, sort_keys=True).encode())
    store.write_bytes(SPEC_FILE, run.to_json().encode())
    ledger = Ledger(store)
    probe_todo = [u for u in plan.probe if not ledger.is_done("probe", u.key, u.hash, verify)]
    for key in {k for u in probe_todo for k in u.needs if ledger.is_dropped("extract", k)}:
        ledger.forget("extract", key)  # a dropped shard that a probe to redo reads is extracted again
    ext_todo = [u for u in plan.extract if not ledger.is_done("extract", u.key, u.hash, verify)]
    result = LaunchResult(plan=plan, skipped=len(plan.extract) + len(plan.probe) - len(ext_todo) - len(probe_todo))
    emit({"event": "plan", "extract": len(plan.extract), "probe": len(plan.probe), "already_done": result.skipped,
          "extract_todo": len(ext_todo), "probe_todo": len(probe_todo)})
    with Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, disable=quiet, transient=False) as progress:
        def reduce_now() -> None:  # with the ledger the run kept current; in the Ray session when one is open
            bar = progress.add_task("reduce", total=None, rate="")

            def reduced(n: int, total: int) -> None:
                progress.update(bar, advance=n, total=total)
                emit({"event": "reduce", "advance": n, "total": total})

            reduce_run(store, run, planned, ledger=ledger, on_step=reduced)

        if ext_todo or probe_todo:
            with ray_session(spec.cluster, address):
                _run(spec, plan, ledger, ext_todo, probe_todo, result, progress, emit)
                reduce_now()
        else:
            reduce_now()
    result.no_subword = no_subword_notes(ledger, planned)
    result.seconds = time.time() - start
    return result


def _check_resources(available: dict, res: Resources, extracting: bool) -> None:
    """A request the cluster can never meet would wait forever: say so instead."""
    wants = [("cluster.cpus_per_probe", "CPU", res.probe_cpus), ("cluster.gpus_per_probe", "GPU", res.probe_gpus)]
    if extracting:
        wants += [("cluster.cpus_per_extractor", "CPU", res.actor_cpus),
                  ("cluster.gpus_per_extractor", "GPU", res.actor_gpus)]
    for key, resource, amount in wants:
        if amount > available.get(resource, 0):
            raise XlpError(f"{key}: {amount} {resource} per worker, but the Ray cluster has "
                           f"{available.get(resource, 0):g} {resource} in all")


def _ship_plugin_tasks(plan: Plan) -> None:
    """Tasks defined outside xlp travel to the workers by value, so worker nodes need not import them."""
    import ray

    for unit in plan.probe:
        for task in getattr(unit, "tasks", None) or (unit.sentence_task,):
            module = sys.modules[type(task).__module__]
            if not module.__name__.startswith("xlp."):
                ray.cloudpickle.register_pickle_by_value(module)


def _run(spec, plan, ledger, ext_todo, probe_todo, result, progress, emit) -> None:
    import ray

    from xlp.run.probe_work import fit_probe_unit, run_probe, score_probe_unit
    from xlp.run.warm import warm_worker
    from xlp.run.work import ExtractionWorker, Faults, WorkContext, run_sentence_unit

    readers = Counter(k for u in probe_todo for k in u.needs)  # probes still to read each shard
    waiting = WaitingProbes(probe_todo, {u.key for u in plan.extract} - {u.key for u in ext_todo})
    fit_shards = {k for u in probe_todo for k in u.fit_needs}
    by_ckpt = extraction_order(ext_todo, fit_shards)

    cl = spec.cluster
    res = plan_resources(cl, len(ext_todo))
    _check_resources(ray.cluster_resources(), res, bool(ext_todo))
    Actor = ray.remote(ExtractionWorker)
    n_actors = res.actors if ext_todo else 0  # an actor with nothing to extract would hold its CPUs all run
    runtime = Runtime(batch_tokens=spec.batch_tokens, trust_remote_code=spec.trust_remote_code,
                      allow_pickle=spec.allow_pickle, precision=spec.precision)
    ctx = WorkContext(spec.output, runtime, Faults.from_env(), probe_on_gpu=cl.gpus_per_probe > 0,
                      fit_cpus=res.fit_cpus)
    _ship_plugin_tasks(plan)
    actors = [Actor.options(num_cpus=res.actor_cpus, num_gpus=res.actor_gpus, max_concurrency=2,  # model + write
                            max_restarts=2, max_task_retries=2, scheduling_strategy="SPREAD")
              .remote(ctx) for _ in range(n_actors)]
    if ext_todo:  # (with nothing to extract the probes start at once: no time to warm a worker ahead)
        warm_workers(res, n_actors, ray.remote(warm_worker).options(num_cpus=0))
    nodes = ray.get([a.node.remote() for a in actors]) if res.adaptive else [None] * n_actors
    cpus_of = node_cpus() if res.adaptive else {}
    # a probe unit's tasks, whole or its fit and scoring apart, all get the probes' resources
    probe_task, fit_task, score_task = (ray.remote(f).options(num_cpus=res.probe_cpus, num_gpus=res.probe_gpus,
                                                              max_retries=2)
                                        for f in (run_probe, fit_probe_unit, score_probe_unit))
    # sentence tasks run the model: they get an extractor's resources
    sentence_task = ray.remote(run_sentence_unit).options(num_cpus=res.actor_cpus, num_gpus=res.actor_gpus,
                                                          max_retries=2)
    queues: list[deque] = [deque() for _ in range(n_actors)]  # the units of each actor's checkpoint not yet sent
    load = [0] * n_actors  # units sent to each actor and not finished
    sent = [0] * n_actors  # units sent to each actor (each unit's turn on its model)
    inflight: dict = {}
    fitting: dict = {}  # probe unit key -> its fit task's result, for the units fit before their targets' shards

    def send(i: int) -> None:
        """Keep two units in each actor's hands (one running, the next waiting); on a CPU node, each batch with the
        actor's share of its node's idle CPUs (shared with the fits there, in proportion to what each holds)."""
        share = None
        if res.adaptive and queues[i] and load[i] < 2:
            share = ThreadShare(res.extractor_threads, nodes[i], cpus_of.get(nodes[i], 1.0))
        while queues[i] and load[i] < 2:
            u = queues[i].popleft()
            inflight[actors[i].run.remote(u, share, sent[i])] = ("extract", u, i)
            load[i] += 1
            sent[i] += 1

    def feed(i: int) -> None:
        """An idle actor takes the next checkpoint's units; when none is left, it shares the checkpoint with the
        most units not yet sent (the later half of them, if two or more: loading a model for one unit may take
        longer than waiting for it), so no actor idles while many units wait."""
        if not queues[i] and not load[i]:
            if by_ckpt:
                queues[i].extend(by_ckpt.popitem(last=False)[1])
            else:
                j = max(range(n_actors), key=lambda j: len(queues[j]))
                for _ in range(len(queues[j]) // 2):
                    queues[i].appendleft(queues[j].pop())
        send(i)

    def submit(units: list) -> None:
        for u in units:
            if isinstance(u, SentenceUnit):
                inflight[sentence_task.remote(ctx, u)] = ("probe", u, None)
            elif u.key in fitting:  # Ray starts the scoring once the fit's result exists
                digests = ledger.output_digests("extract", u.needs)
                inflight[score_task.remote(ctx, u, fitting.pop(u.key), digests)] = ("probe", u, None)
            else:
                inflight[probe_task.remote(ctx, u, ledger.output_digests("extract", u.needs))] = ("probe", u, None)

    def fit(units: list) -> None:
        done = ledger.records("extract")
        for u in units:
            if done[u.fit_needs[0]].get("rows", 0) >= EARLY_FIT_ROWS:  # else it waits for its targets' shards
                fitting[u.key] = fit_task.remote(ctx, u, ledger.output_digests("extract", u.fit_needs))

    def release(ready: list, fits: list) -> None:
        fit(fits)
        submit(ready)

    def fail(units: list) -> None:
        for u in units:
            fitting.pop(u.key, None)
            ledger.record_failure("probe", u.key, u.hash, "an input shard failed to extract")
            result.failed[f"probe {u.key}"] = "input shard failed"

    def finish(ref, got: dict) -> None:
        stage, unit, i = inflight.pop(ref)
        try:
            info = got[ref] if ref in got else ray.get(ref)
            ledger.record(stage, unit.key, unit.hash, unit.output, info.pop("bytes"), **info)
            if stage == "extract":
                result.extracted += 1
                words[0] += info["rows"]
                progress.update(bars["extract"], rate=f"{words[0] / (time.time() - t0):,.0f} words/s")
            else:
                result.probed += 1
                for k in unit.needs:
                    readers[k] -= 1
                    if readers[k] == 0 and spec.features == "drop" and k in ledger.records("extract"):
                        ledger.drop_output("extract", k)
        except Exception as e:  # noqa: BLE001 - a failed unit is recorded; the run goes on
            ledger.record_failure(stage, unit.key, unit.hash, _error_text(e))
            bad = getattr(e, "cause", e)
            if isinstance(bad, ShardChecksumError):  # the input, not this unit, is broken: redo it next time
                ledger.forget_output(bad.path)
            result.failed[f"{stage} {unit.key}"] = _error_text(e)
        failed = f"{stage} {unit.key}" in result.failed
        if stage == "extract" and failed:  # the probes that waited for this shard fail with it
            fail(waiting.failed(unit.key))
        elif stage == "extract":  # those it was the last one missing of start, those it was the training shard of fit
            release(*waiting.extracted(unit.key))
        progress.advance(bars[stage])
        finished[stage] += 1
        emit({"event": "unit", "stage": stage, "key": unit.key,
              "status": "failed" if failed else "done",
              "finished": finished[stage], "total": len(ext_todo if stage == "extract" else probe_todo)})
        if stage == "extract":
            load[i] -= 1
            feed(i)
            if load[i] == 0:  # nothing left to extract: free its CPUs/GPUs for probes
                ray.kill(actors[i])

    bars = {"extract": progress.add_task("extract", total=len(ext_todo), rate=""),
            "probe": progress.add_task("probe", total=len(probe_todo), rate="")}
    words, t0, finished = [0], time.time(), Counter()
    for i in range(n_actors):
        feed(i)
    release(*waiting.ready_now())
    status = InflightFile(ledger.store)
    while inflight:
        status.publish(inflight)
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=status.due_in())
        if ready and len(inflight) > 1:  # every unit finished by now, handled in one pass
            ready = ray.wait(list(inflight), num_returns=len(inflight), timeout=0)[0]
        try:  # one call for all of them; a unit that failed raises, and then each is fetched on its own
            got = dict(zip(ready, ray.get(ready)))
        except Exception:  # noqa: BLE001
            got = {}
        for ref in ready:
            finish(ref, got)
            status.changed()
    ledger.store.delete(INFLIGHT)
    for stage in ("features", "probes"):  # what a writer that died (a killed worker) left half-written; none is alive
        for rel in ledger.store.files(stage, partial=True):
            ledger.store.delete(rel)
