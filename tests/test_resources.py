"""The resource policy: extractors take the cores nothing else can use yet; explicit CPUs are their threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from xlp.config import ClusterSpec
from xlp.run.resources import plan_resources, share_threads


def test_extractor_runs_on_every_idle_core_before_probes_can_start(clean_grid):
    _, run, _, _ = clean_grid
    records = [json.loads(p.read_text()) for p in sorted((run / "ledger" / "extract").rglob("*.json"))]
    first = min(records, key=lambda r: r["finished"])
    # the session's Ray has 2 CPUs; the actor reserves 1, and no probe can run before the first shards exist
    assert first["threads"] == 2
    assert all(1 <= r["threads"] <= 2 for r in records)


def test_probes_fit_while_extraction_goes_on_and_score_once_their_targets_exist(ray_local, tmp_path, tiny_series,
                                                                                 monkeypatch):
    """A probe unit's fit starts once its training shard is written, while the actor still extracts (the
    training shards first; here the last test shard is held for 5 s), and its rows are written only after every
    target's shard is, the same rows as one task with every shard there. A fit that fails fails its unit alone,
    with its own error, and the relaunch redoes that unit."""
    import threading

    import pandas as pd
    import torch
    from conftest import write_spec

    from xlp.config import load_spec
    from xlp.models.loading import resolve_precision
    from xlp.run.driver import launch
    from xlp.run.probe_work import run_probe
    from xlp.run.resources import EARLY_FIT_ROWS
    from xlp.run.work import WorkContext

    run = tmp_path / "run"
    spec = load_spec(write_spec(
        tmp_path / "grid.yaml", name="grid", output=str(run),
        checkpoints=[{"path": str(tiny_series / "step_100"), "step": 100}],
        data={"ud_root": "${XLP_SHARED}/ud", "languages": ["en", "de"], "max_train_sentences": 200,
              "max_test_sentences": 40}, tasks=["pos"], layers="all", probe={"seeds": [0]}))
    marker, held = tmp_path / "hold-marker", "step=100/lang=en/split=test"
    monkeypatch.setenv("XLP_HOLD_IN_UNIT", held)
    monkeypatch.setenv("XLP_HOLD_MARKER", str(marker))
    monkeypatch.setenv("XLP_FAIL_UNIT", "src=de")

    def release() -> None:
        deadline = time.time() + 120
        while not marker.exists() and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(5)
        marker.unlink()

    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        first = launch(spec, quiet=True)
    finally:
        releaser.join()
    en, de = sorted(first.plan.probe, key=lambda u: u.src != "en")
    assert list(first.failed) == [f"probe {de.key}"] and "injected failure" in first.failed[f"probe {de.key}"]
    extracted = {r["key"]: r for r in (json.loads(p.read_text()) for p in (run / "ledger" / "extract").rglob("*.json"))}
    probe = json.loads((run / "ledger" / "probe" / f"{en.key}.json").read_text())
    assert extracted[en.fit_needs[0]]["rows"] >= EARLY_FIT_ROWS  # a fit worth a task of its own
    # each unit records the arithmetic it ran with: precision auto, resolved for its device
    assert {r["precision"] for r in extracted.values()} == {resolve_precision("auto", torch.device("cpu"))}
    assert extracted[en.fit_needs[0]]["finished"] <= probe["fit_started"] < extracted[held]["finished"] - 2
    # in a worker through its imports before the shard existed, not a process started when the fit could
    assert probe["worker_warmed"] < extracted[en.fit_needs[0]]["finished"]
    assert probe["finished"] >= max(extracted[k]["finished"] for k in en.needs)

    for name in ("XLP_HOLD_IN_UNIT", "XLP_FAIL_UNIT"):
        monkeypatch.delenv(name)
    again = launch(spec, quiet=True)
    assert not again.failed and (again.extracted, again.probed) == (0, 1)
    # nothing else runs: the fit takes both of the node's CPUs (no extraction actor holds one)
    assert json.loads((run / "ledger" / "probe" / f"{de.key}.json").read_text())["fit_threads"] == 2
    cols = ["task", "layer", "src_lang", "tgt_lang", "seed", "value", "n_train", "n_test"]
    ahead = pd.read_parquet(run / en.output)[cols]
    run_probe(WorkContext(str(run)), en)  # in this process, in one go
    pd.testing.assert_frame_equal(ahead, pd.read_parquet(run / en.output)[cols])


def test_two_extractors_share_one_checkpoint_and_write_its_shards(clean_grid, tmp_path, tiny_series):
    """With more extractors than checkpoints, an idle actor takes half of another's units not yet sent (loading
    the same checkpoint): both extract, and the shards hold the vectors that one extractor wrote."""
    import numpy as np
    import pyarrow.parquet as pq
    from conftest import write_spec

    from xlp.config import load_spec
    from xlp.run.driver import launch
    from xlp.storage.features import vectors

    _, clean, _, _ = clean_grid
    spec = load_spec(write_spec(
        tmp_path / "one.yaml", name="one", output=str(tmp_path / "run"),
        checkpoints=[{"path": str(tiny_series / "step_100"), "step": 100}],
        data={"ud_root": "${XLP_SHARED}/ud", "languages": ["en", "de", "vi"], "max_train_sentences": 80,
              "max_test_sentences": 40}, tasks=["pos"], layers="all", probe={"seeds": [0]}, cluster={"extractors": 2}))
    assert not launch(spec, quiet=True).failed
    records = {p.relative_to(tmp_path / "run" / "ledger" / "extract"): json.loads(p.read_text())
               for p in (tmp_path / "run" / "ledger" / "extract").rglob("*.json")}
    assert len(records) == 6 and len({r["pid"] for r in records.values()}) == 2
    for shard in (tmp_path / "run" / "features").rglob("*.parquet"):
        ours, theirs = pq.read_table(shard), pq.read_table(clean / shard.relative_to(tmp_path / "run"))
        for col in (c for c in ours.column_names if c.startswith("layer_")):
            np.testing.assert_allclose(vectors(ours, col), vectors(theirs, col), atol=2e-3)


def test_set_cpus_are_the_threads_and_a_gpu_extractor_takes_no_idle_cores():
    set_cpus = plan_resources(ClusterSpec(cpus_per_extractor=3), units=5)
    assert (set_cpus.actor_cpus, set_cpus.extractor_threads, set_cpus.adaptive) == (3, 3, False)
    gpu = plan_resources(ClusterSpec(gpus_per_extractor=1), units=5)
    assert (gpu.actor_cpus, gpu.extractor_threads, gpu.adaptive) == (1, 1, False)
    auto = plan_resources(ClusterSpec(extractors=4), units=2)
    assert auto.actors == 2 and auto.actor_cpus == 1 and auto.adaptive
    # a big fit shares idle CPUs where extractors do, from its own one; not with set reservations or GPU probes
    gpu_probes = plan_resources(ClusterSpec(gpus_per_probe=0.5), units=2)
    assert (auto.fit_cpus, set_cpus.fit_cpus, gpu_probes.fit_cpus) == (1, 0, 0)
    # idle CPUs are shared in proportion to what each task holds on the node
    assert share_threads(1, idle=6, node_cpus=8) == 4  # two hold one CPU each: 1 own + half of the 6 idle
    assert share_threads(1, idle=0, node_cpus=8) == 1  # the others hold the rest
    assert share_threads(1, idle=1, node_cpus=2) == 2  # the last fit takes the core extraction left
    assert share_threads(2, idle=4, node_cpus=8) == 4  # holds 2 of the 4 held: half of the 4 idle
    assert share_threads(1, idle=16, node_cpus=8) == 8  # never more than the node has
    held = [1, 1, 2, 1]  # every task on an 8-CPU node asks for its share: together no more than the node
    assert sum(share_threads(h, idle=8 - sum(held), node_cpus=8) for h in held) <= 8


def test_curves_and_figures_as_ray_tasks_give_the_serial_results_bytes(clean_grid, tmp_path, monkeypatch):
    """A copy of the clean grid reduced in the session's Ray (curves and figures as Ray tasks), then again in the
    driver alone: its results, report page and figures are the same bytes. (The run itself is not the reference:
    other tests relaunch it, and a relaunch that reduces nothing new keeps its older report.)"""
    import ray
    from conftest import copy_run

    import xlp.run.reduce as run_reduce
    from xlp.analysis.reduce import reduce
    from xlp.run.manifest import load_run
    from xlp.storage import Store

    spec, run, _, _ = clean_grid
    copy, _ = copy_run(spec, run, tmp_path)
    store = Store(str(copy))
    manifest, plan = load_run(store)
    files = [f"results/{n}.{x}" for n in ("probes", "emergence", "findings", "layers") for x in ("parquet", "csv")]
    files += ["report/index.html", *sorted(str(f.relative_to(copy)) for f in (copy / "report" / "figures").iterdir())]
    assert len(files) > 8 and ray.is_initialized()
    assert run_reduce.reduce_run(store, manifest, plan, force=True)  # in parallel: the session's Ray is open
    parallel = {f: (copy / f).read_bytes() for f in files}
    monkeypatch.setattr(run_reduce, "parallel_reduce", reduce)  # the serial reducer
    monkeypatch.setattr(run_reduce, "ray_map", None)  # figures drawn one after the other, here
    assert run_reduce.reduce_run(store, manifest, plan, force=True)
    for f in files:
        assert (copy / f).read_bytes() == parallel[f], f


def test_a_worker_is_warmed_for_each_probe_slot_the_free_cpus_give_at_once_and_the_extractors_in_the_background(
        ray_local):
    """On the session's 2-CPU node: one extractor holds a CPU, the other gives a probe slot that a fit takes as soon
    as a training shard exists (its worker imports at once); the extractor's CPU gives one once extraction ends (its
    worker imports at idle priority). Half-CPU probes: two of each."""
    from xlp.run.resources import warm_workers

    class Warm:
        def __init__(self):
            self.asked = []

        def remote(self, background: bool) -> None:
            self.asked.append(background)

    for probe_cpus, expected in ((1, [False, True]), (0.5, [False, False, True, True])):
        warm = Warm()
        warm_workers(plan_resources(ClusterSpec(cpus_per_probe=probe_cpus), units=4), 1, warm)
        assert warm.asked == expected


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_a_background_warm_up_imports_everything_at_idle_priority_and_leaves_the_worker_its_own():
    """The extractors' probe workers warm up at the start beside the extractor's own start: their imports (torch
    first) run in a thread of idle priority, which needs the warm-up's module to import nothing heavy (Ray imports
    it in the worker's main thread), and the worker's main thread, which runs its later tasks, keeps its priority."""
    code = """
import os, sys
import xlp.run.warm as warm
light = "torch" not in sys.modules
policies, imports = [], warm._imports
warm._imports = lambda: (policies.append(os.sched_getscheduler(0)), imports())
warm.warm_worker(background=True)
from xlp.run import probe_work
print(light, policies == [os.SCHED_IDLE], "torch" in sys.modules, len(probe_work.WARMED),
      os.sched_getscheduler(0) == os.SCHED_OTHER)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "True", "True", "1", "True"], out.stderr[-2000:]


TWO_SESSIONS = """
import json, ray
from xlp.config import ClusterSpec
from xlp.run.ray_session import ray_session
for _ in range(2):
    with ray_session(ClusterSpec(num_cpus=1)):
        node = ray._private.worker._global_node
        spill = json.loads(node._config["object_spilling_config"])["params"]["directory_path"]
        print(json.dumps([node.get_session_dir_path(), spill]), flush=True)
"""


def test_each_local_session_spills_into_its_own_session_folder():
    """ray.init writes the new session's spill folder into the config dict it is given: two launches in one process
    (a notebook, the tests) must each spill into their own session's folder, not the second into the first's."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", TWO_SESSIONS], capture_output=True, text=True, timeout=300, env=env)
    sessions = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("[")]
    assert len(sessions) == 2, out.stderr[-2000:]
    assert sessions[0][0] != sessions[1][0]
    assert [spill for _, spill in sessions] == [folder for folder, _ in sessions]


RAY_MAP = """
import json, time, psutil, ray
from xlp.config import ClusterSpec
from xlp.run.parallel import ray_map
from xlp.run.ray_session import ray_session

def nap(x):
    time.sleep(0.3)
    return x * x

with ray_session(ClusterSpec(num_cpus=2)):
    squares = ray_map(nap, list(range(12)))
    time.sleep(1)
    raylet = psutil.Process(ray._private.worker._global_node.all_processes["raylet"][0].process.pid)
    workers = [p for p in raylet.children() if "Agent" not in " ".join(p.cmdline())]
    print(json.dumps([squares, len(workers)]))
"""


def test_ray_map_keeps_the_items_order_and_starts_no_worker_beyond_the_cpus():
    """The reducer's and the report's Ray tasks: results in the items' order, and no more tasks queued than the node
    has CPUs: Ray starts a worker process for each task queued beyond its idle ones (xlp's local node keeps room for
    warmed workers), 0.3-0.6 s of a core each on a small node, beside tasks of a fraction of a second."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", RAY_MAP], capture_output=True, text=True, timeout=300, env=env)
    assert out.stdout.strip(), out.stderr[-2000:]
    squares, workers = json.loads(out.stdout.splitlines()[-1])
    assert squares == [x * x for x in range(12)]
    assert workers <= 3  # a worker per CPU, and at most the one spare Ray may start as the driver connects; with
    # every task queued at once, Ray starts a worker per CPU more (4 on this node)


def test_the_workers_modules_import_neither_torch_nor_what_only_probes_and_the_reducer_use():
    """The driver imports the workers' modules to hand them to Ray, and Ray imports the actor's in the actor before its
    first unit. They pull in no torch: the driver's import of it (1.2 s on this machine) stood between Ray's start and
    the extraction actor's. The actor's module pulls in no pandas, scipy, scikit-learn or matplotlib either: they
    would add to the extractor's start, which every other unit waits for (pandas alone 0.26 s of it). A probe worker's
    warm-up imports them all."""
    code = """
import sys
heavy = ("torch", "pandas", "scipy", "sklearn", "matplotlib")
import xlp.run.work
print(*sorted(m for m in heavy if m in sys.modules) or ["none"])
import xlp.run.driver, xlp.run.probe_work, xlp.run.warm
print(*sorted(m for m in ("torch", "transformers") if m in sys.modules) or ["none"])
from xlp.run.probe_work import warmed_up
warmed_up()
print(*sorted(m for m in heavy if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.splitlines() == ["none", "none", "matplotlib pandas scipy torch"], out.stdout + out.stderr[-2000:]
