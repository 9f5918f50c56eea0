"""A whole run on an S3-compatible object store: moto's S3 server on loopback, started by the test."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import run_xlp, write_spec

from xlp.errors import XlpError
from xlp.run.lock import LOCK, run_lock
from xlp.storage import Store

# moto 5.2.1 answers CompleteMultipartUpload with a root tag that pyarrow rejects (getmoto/moto#10055)
pytest.importorskip("moto", minversion="5.2.2", reason="the S3 tests need moto[server] >= 5.2.2 (dev extras)")
moto_server = pytest.importorskip("moto.server")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def s3(monkeypatch):
    """An empty bucket `runs` on a real S3 server on 127.0.0.1; endpoint and credentials from the
    environment, as pyarrow, boto3 and Ray workers started by a driver read them."""
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for var, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "xlp-test",
                       "AWS_SECRET_ACCESS_KEY": "xlp-test", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(var, value)
    boto3.client("s3").create_bucket(Bucket="runs")
    yield "s3://runs"
    server.stop()


def _xlp_process(*args: str) -> subprocess.CompletedProcess:
    """`xlp ...` in a fresh process (its own local Ray, whose workers import this worktree)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-c", "from xlp.cli import main; main()", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_a_whole_run_lives_on_s3(s3, tmp_path, tiny_series):
    """Launch writes features, ledger, results and report to s3://; a relaunch redoes nothing; `xlp
    status` in another process reads the run from the store; `xlp report` rebuilds the report there."""
    out = f"{s3}/tiny"
    spec = write_spec(tmp_path / "s3.yaml", name="tiny", output=out,
                      checkpoints=[{"path": f"{tiny_series}/step_*"}],
                      data={"ud_root": "${XLP_SHARED}/ud", "languages": ["en", "vi"],
                            "max_train_sentences": 40, "max_test_sentences": 20},
                      tasks=["pos"], layers="all", probe={"seeds": [0]}, cluster={"num_cpus": 2})
    first = _xlp_process("launch", str(spec), "--json")
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert (summary["extracted"], summary["probed"], summary["failed"]) == (3 * 2 * 2, 3 * 2, {})

    store = Store(out)
    files = store.files("")
    assert sum(f.startswith("features/step=") and f.endswith(".parquet") for f in files) == 12
    assert sum(f.startswith("ledger/") for f in files) >= 12 + 6
    for f in ["results/probes.parquet", "results/emergence.parquet", "report/index.html", "plan.json"]:
        assert files.get(f, 0) > 0, f
    assert LOCK not in files and not any("_tmp-" in f for f in files)  # released; nothing half-written
    probes = store.read_table("results/probes.parquet").to_pandas()
    assert len(probes) == 3 * 3 * 2 * 2  # steps x layers (0..2) x sources x targets
    assert probes.probe_iters.gt(0).all() and probes.probe_grad_norm.le(1e-4).all()

    tables = sorted(f for f in files if f.startswith("results/") and f.endswith(".parquet"))
    assert {"results/probes.parquet", "results/emergence.parquet", "results/findings.parquet"} <= set(tables)
    before = {f: store.sha256(f) for f in tables}
    page = store.read_bytes("report/index.html")
    assert page.count(b"data:image/png;base64,") == 4  # acquisition, curves, transfer and layers of pos
    again = run_xlp("launch", str(spec), "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert (summary["extracted"], summary["probed"], summary["skipped_done"]) == (0, 0, 12 + 6)
    assert {f: store.sha256(f) for f in before} == before

    status = _xlp_process("status", out, "--json")
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert {s: (r["done"], r["total"], r["failed"]) for s, r in st["stages"].items()} == {
        "extract": (12, 12, 0), "probe": (6, 6, 0)}
    assert not st["driver"]["running"]

    # `xlp report` rebuilds results and report from the probe outputs on the store alone: the same tables, byte
    # for byte, and the same page (its figures inline)
    store.delete("report")
    store.delete("results")
    assert not store.files("results") and not store.files("report")
    rep = run_xlp("report", out)
    assert rep.returncode == 0, rep.stderr
    assert {f: store.sha256(f) for f in tables} == before
    assert store.read_bytes("report/index.html") == page
    figures = store.files("report/figures")
    assert {f"report/figures/{k}_pos.{x}" for k in ("curves", "layers") for x in ("png", "svg")} <= set(figures)


def test_two_drivers_cannot_both_take_the_lock_on_s3(s3):
    """The lock is a conditional put: of many simultaneous creates exactly one wins, and a second
    driver on a held run is refused while the holder lives."""
    stores = [Store(f"{s3}/race") for _ in range(8)]
    won, barrier = [], threading.Barrier(len(stores))

    def claim(store: Store, i: int) -> None:
        barrier.wait()
        if store.create_exclusive(LOCK, str(i).encode()):
            won.append(i)

    threads = [threading.Thread(target=claim, args=(st, i)) for i, st in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and stores[0].read_bytes(LOCK) == str(won[0]).encode()

    run = Store(f"{s3}/held")
    with run_lock(run):
        assert json.loads(run.read_bytes(LOCK))["pid"] == os.getpid()
        with pytest.raises(XlpError, match="being run by another xlp launch"):
            with run_lock(Store(f"{s3}/held")):
                pass
        assert json.loads(run.read_bytes(LOCK))["pid"] == os.getpid()
    assert not run.exists(LOCK)

    # a driver that died on this machine left its lock on S3: a relaunch takes it over, leaving no takeover mark
    import socket
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = Store(f"{s3}/stale")
    stale.write_bytes(LOCK, json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": 0}).encode())
    with run_lock(stale):
        assert json.loads(stale.read_bytes(LOCK))["pid"] == os.getpid()
        assert list(stale.files("")) == [LOCK]
    assert not stale.exists(LOCK)
