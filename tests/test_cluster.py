"""A real multi-node Ray cluster on loopback, driven by `xlp launch` as on a real cluster: extraction
actors land on the nodes with the (simulated) GPUs, and losing a whole node mid-run costs only the
units it was running, which are redone on the other node, with results identical to an undisturbed run;
a second launch on the same output meanwhile is refused and harms nothing; `xlp status --watch`
follows the run to its end."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

from conftest import grid_spec, run_xlp, snapshot

# notice a dead node within about a second (Ray's defaults take tens of seconds)
FAST_HEALTH_CHECKS = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300,
                      "health_check_timeout_ms": 300, "health_check_failure_threshold": 3}


def test_gpu_placement_and_a_killed_node_loses_nothing(clean_grid, tmp_path, tiny_series):
    from ray.cluster_utils import Cluster

    clean_snapshot = clean_grid[3]
    # shut down by hand below: Cluster.shutdown() would also reset this process's link to the session's Ray
    cluster = Cluster(initialize_head=True, shutdown_at_exit=False,
                      head_node_args={"num_cpus": 2, "num_gpus": 0, "include_dashboard": False,
                                      "_system_config": FAST_HEALTH_CHECKS})
    gpu_nodes = [cluster.add_node(num_cpus=1, num_gpus=2) for _ in range(2)]
    driver = None
    try:
        cluster.wait_for_nodes()
        run = tmp_path / "run"
        grid_spec(tmp_path, tiny_series, run,
                  cluster={"extractors": 2, "gpus_per_extractor": 1, "cpus_per_extractor": 0.5,
                           "gpus_per_probe": 0.5, "cpus_per_probe": 0.25})
        marker = tmp_path / "held"
        # the unit is held where it runs until the test has taken its node down and deleted the marker
        env = {**os.environ, "RAY_ADDRESS": cluster.address,
               "XLP_HOLD_IN_UNIT": "step=100/lang=de/split=test", "XLP_HOLD_MARKER": str(marker)}
        with open(tmp_path / "driver.out", "w") as out, open(tmp_path / "driver.err", "w") as err:
            driver = subprocess.Popen([sys.executable, "-c", "from xlp.cli import main; main()", "launch",
                                       str(tmp_path / "grid.yaml"), "--json"], env=env, stdout=out, stderr=err)
        deadline = time.time() + 120
        while not marker.exists():
            assert driver.poll() is None and time.time() < deadline, (tmp_path / "driver.err").read_text()
            time.sleep(0.1)
        held_on, pid = marker.read_text().split()
        # meanwhile a second launch on the same output is refused, and touches nothing
        second = run_xlp("launch", tmp_path / "grid.yaml")
        assert second.returncode == 1 and "being run by another xlp launch" in second.stderr
        assert "Traceback" not in second.stderr
        victim = next(n for n in gpu_nodes if n.node_id == held_on)  # the unit runs on a GPU node
        survivor = next(n for n in gpu_nodes if n is not victim)
        cluster.remove_node(victim, allow_graceful=False)
        with contextlib.suppress(ProcessLookupError):  # a lost machine takes its worker processes with it
            os.kill(int(pid), signal.SIGKILL)
        marker.unlink()
        # `xlp status --watch` follows the run from its folder until the driver is done
        looks = [json.loads(line) for line in run_xlp("status", run, "--watch", "0.5", "--json").stdout.splitlines()]
        assert looks[0]["driver"]["running"] and not looks[-1]["driver"]["running"]
        assert {s: (v["done"], v["total"]) for s, v in looks[-1]["stages"].items()} == {"extract": (18, 18),
                                                                                      "probe": (9, 9)}
        assert driver.wait(timeout=240) == 0, (tmp_path / "driver.err").read_text()
        summary = json.loads((tmp_path / "driver.out").read_text().splitlines()[-1])
        assert summary["failed"] == {} and (summary["extracted"], summary["probed"]) == (18, 9)

        extract = {r["key"]: r for r in (json.loads(p.read_text()) for p in (run / "ledger/extract").rglob("*.json"))}
        assert len(extract) == 18
        assert {r["ray_node"] for r in extract.values()} <= {n.node_id for n in gpu_nodes}  # placement
        assert extract["step=100/lang=de/split=test"]["ray_node"] == survivor.node_id
        probe = [json.loads(p.read_text()) for p in (run / "ledger/probe").rglob("*.json")]
        assert len(probe) == 9 and {r["ray_node"] for r in probe} <= {n.node_id for n in gpu_nodes}  # gpus_per_probe
        assert snapshot(run) == clean_snapshot  # no missing, no duplicated, no different rows
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
            driver.wait()
        for node in [*cluster.worker_nodes, cluster.head_node]:
            cluster.remove_node(node)
