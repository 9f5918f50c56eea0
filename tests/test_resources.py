"""The resource policy: extractors take the cores nothing else can use yet; explicit CPUs are their threads."""

from __future__ import annotations

import json

from xlp.config import ClusterSpec
from xlp.run.resources import plan_resources


def test_extractor_runs_on_every_idle_core_before_probes_can_start(clean_grid):
    _, run, _, _ = clean_grid
    records = [json.loads(p.read_text()) for p in sorted((run / "ledger" / "extract").rglob("*.json"))]
    first = min(records, key=lambda r: r["finished"])
    # the session's Ray has 2 CPUs; the actor reserves 1, and no probe can run before the first shards exist
    assert first["threads"] == 2
    assert all(1 <= r["threads"] <= 2 for r in records)


def test_set_cpus_are_the_threads_and_a_gpu_extractor_takes_no_idle_cores():
    set_cpus = plan_resources(ClusterSpec(cpus_per_extractor=3), checkpoints=5)
    assert (set_cpus.actor_cpus, set_cpus.threads(idle_cpus=8, extractors_on_node=1, node_cpus=16)) == (3, 3)
    gpu = plan_resources(ClusterSpec(gpus_per_extractor=1), checkpoints=5)
    assert (gpu.actor_cpus, gpu.threads(idle_cpus=8, extractors_on_node=1, node_cpus=16)) == (1, 1)
    auto = plan_resources(ClusterSpec(extractors=4), checkpoints=2)
    assert auto.actors == 2 and auto.actor_cpus == 1
    assert auto.threads(idle_cpus=6, extractors_on_node=2, node_cpus=8) == 4  # 1 own + half of 6 idle
    assert auto.threads(idle_cpus=0, extractors_on_node=2, node_cpus=8) == 1  # probes hold the rest
    assert auto.threads(idle_cpus=16, extractors_on_node=1, node_cpus=8) == 8  # never more than the node has


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
