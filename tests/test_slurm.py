"""The Slurm recipe on a real Slurm: munged, slurmctld and slurmd for a one-node cluster on loopback (their
config, keys, spool and ports under a temp folder), `sbatch examples/slurm/xlp.sbatch SPEC` with the node's
CPUs and no GPUs; the run's results equal a local run of the same spec. And the waits the recipe relies on:
`xlp status --watch` on a folder not launched yet, `xlp status --job --watch` ending with the driver's code."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import MINILM, free_ports, run_xlp, write_spec

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "examples" / "slurm" / "xlp.sbatch"
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "squeue", "scancel")


def tiny_spec(path: Path, output: Path) -> Path:
    """POS on MiniLM: two languages, 40 training sentences, one layer, one seed."""
    return write_spec(path, name="slurm", output=str(output), checkpoints=[{"path": str(MINILM), "step": 0}],
                      data={"ud_root": "${XLP_SHARED}/ud", "languages": ["en", "de"],
                            "max_train_sentences": 40, "max_test_sentences": 20},
                      tasks=["pos"], layers=[3], probe={"seeds": [0]})


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    """The tiny spec launched here (`xlp launch`, a local Ray): what the cluster must reproduce."""
    tmp = tmp_path_factory.mktemp("local")
    r = run_xlp("launch", tiny_spec(tmp / "spec.yaml", tmp / "run"), "--quiet")
    assert r.returncode == 0, r.stderr
    return tmp / "run"


class Slurm:
    """A one-node Slurm on loopback, all of it under `root`; `env` makes Slurm's commands use it."""

    def __init__(self, root: Path):
        self.root, self.procs = root, {}
        self.node = socket.gethostname().split(".")[0]
        self.env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}

    def start(self) -> None:
        r = self.root
        keys, sock = r / "munge-key", r / "munge"
        keys.mkdir(mode=0o700)
        sock.mkdir(mode=0o755)  # munged wants its socket's folder open to every user
        key = keys / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._spawn("munged", "munged", "--foreground", "--force", f"--socket={sock}/socket", f"--key-file={key}",
                    f"--pid-file={keys}/munged.pid", f"--log-file={r}/munged.log", f"--seed-file={keys}/seed")
        self._until(lambda: (sock / "socket").exists(), "munged's socket")
        hw = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.split()
        cpus = min(next(int(w.split("=")[1]) for w in hw if w.startswith("CPUs=")), len(os.sched_getaffinity(0)))
        ctld, slurmd = free_ports(2)
        for d in ("state", "spool"):
            (r / d).mkdir()
        (r / "slurm.conf").write_text("\n".join([
            "ClusterName=xlptest", f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={ctld}", f"SlurmdPort={slurmd}", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={sock}/socket",
            f"StateSaveLocation={r}/state", f"SlurmdSpoolDir={r}/spool",
            f"SlurmctldPidFile={r}/slurmctld.pid", f"SlurmdPidFile={r}/slurmd.pid",
            f"SlurmctldLogFile={r}/slurmctld.log", f"SlurmdLogFile={r}/slurmd.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none", "MpiDefault=none",
            "SchedulerType=sched/builtin", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "MailProg=/bin/true", "ReturnToService=2", "KillWait=10", "SlurmdParameters=config_overrides",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP", ""]))
        self.cpus = cpus
        self._spawn("slurmctld", "slurmctld", "-D", "-f", str(r / "slurm.conf"))
        self._spawn("slurmd", "slurmd", "-D", "-N", self.node, "-f", str(r / "slurm.conf"))
        self._until(lambda: self.run("sinfo", "-h", "-N", "-o", "%T").stdout.strip() == "idle", "an idle node")

    def run(self, *cmd: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=env or self.env, capture_output=True, text=True, timeout=60)

    def wait(self, job: str, timeout: float) -> dict[str, str]:
        """A job's JobState and ExitCode once it has ended (sbatch --wait looks less and less often)."""
        deadline = time.time() + timeout
        while True:
            fields = dict(w.split("=", 1) for w in self.run("scontrol", "-o", "show", "job", job).stdout.split()
                          if "=" in w)
            if fields.get("JobState") not in (None, "PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
                return {k: fields[k] for k in ("JobState", "ExitCode")}
            if time.time() > deadline:
                self.run("scancel", job)
                raise AssertionError(f"job {job} still {fields.get('JobState')} after {timeout} s")
            time.sleep(0.5)

    def _spawn(self, name: str, *cmd: str) -> None:
        log = open(self.root / f"{name}.out", "wb")
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def _until(self, ready, what: str, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while not ready():
            for name, p in self.procs.items():
                assert p.poll() is None, f"{name} exited: {(self.root / f'{name}.out').read_text()[-2000:]}"
            assert time.time() < deadline, f"no {what} after {timeout} s"
            time.sleep(0.3)

    def stop(self) -> None:
        """Cancel what still runs, then end each daemon this started, by pid, last started first."""
        if "slurmd" in self.procs and self.procs["slurmd"].poll() is None:
            self.run("scancel", "--user=root")
            deadline = time.time() + 30
            while self.run("squeue", "-h").stdout.strip() and time.time() < deadline:
                time.sleep(0.5)
        for p in reversed(list(self.procs.values())):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


@pytest.fixture(scope="module")
def slurm():
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        pytest.skip(f"no Slurm here ({', '.join(missing)} not installed; apt-get install slurm-wlm munge)")
    root = Path(tempfile.mkdtemp(prefix="xlps-", dir="/tmp"))  # short: Ray's sockets live under it
    cluster = Slurm(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def ray_processes(slurm: Slurm) -> list[int]:
    """Processes whose command line names the test's folder (Ray's, under its --temp-dir), the daemons aside."""
    found, daemons = [], {str(p.pid) for p in slurm.procs.values()}
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and p.name not in daemons and str(slurm.root).encode() in (p / "cmdline").read_bytes():
                found.append(int(p.name))
        except OSError:
            pass
    return found


def test_recipe_runs_on_slurm_and_matches_a_local_run(slurm, request):
    """sbatch examples/slurm/xlp.sbatch SPEC on one node, its CPUs, no GPUs: the job waits for Ray and for the
    driver, succeeds, its results equal the local run's, and Ray is gone when the job is."""
    root = slurm.root
    spec = tiny_spec(root / "spec.yaml", root / "run")
    gcs, dashboard, client, agent = free_ports(4)
    env = {**slurm.env, "PYTHONPATH": str(REPO), "RAY_AUTH_TOKEN_PATH": str(root / "ray-token"),
           "XLP_RAY_PORT": str(gcs), "XLP_DASHBOARD_PORT": str(dashboard), "XLP_JOB_POLL": "1",
           "XLP_RAY_WAIT": "120", "XLP_RAY_ARGS": f"--temp-dir={root}/ray --ray-client-server-port={client} "
                                                 f"--dashboard-agent-listen-port={agent}"}
    env.pop("RAY_ADDRESS", None)
    start = time.time()
    sub = slurm.run("sbatch", "--parsable", "--nodes=1", f"--cpus-per-task={slurm.cpus}", "--gpus-per-task=0",
                    f"--chdir={root}", f"--output={root}/slurm-%j.out", str(RECIPE), str(spec), env=env)
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().split(";")[0]
    local_run = request.getfixturevalue("local_run")  # meanwhile, the same spec here
    state = slurm.wait(job, timeout=300)
    took = time.time() - start
    log = (root / f"slurm-{job}.out").read_text() if (root / f"slurm-{job}.out").exists() else "(no output file)"
    print(f"the Slurm job took {took:.1f} s: {state}\n{log}")
    assert state == {"JobState": "COMPLETED", "ExitCode": "0:0"}, log
    assert "1 Ray node(s) up" in log and "SUCCEEDED" in log and "ended with exit code 0" in log
    for f in ("probes.parquet", "emergence.parquet"):
        here, there = (local_run / "results" / f).read_bytes(), (root / "run" / "results" / f).read_bytes()
        print(f"{f}: {'byte-identical' if here == there else 'different bytes'} to the local run's")
        if here != there:  # the same numbers, however Parquet wrote them
            pd.testing.assert_frame_equal(pd.read_parquet(root / "run/results" / f),
                                          pd.read_parquet(local_run / "results" / f))
    deadline = time.time() + 30
    while (left := ray_processes(slurm)) and time.time() < deadline:
        time.sleep(0.5)
    assert not left, f"Ray processes outlived the job: {left}"


def test_status_watch_waits_for_a_folder_not_launched_yet(local_run, tmp_path):
    """--watch on a folder without plan.json says it waits, then shows the run once it appears; it gives up
    after --start-timeout, with the reason; without --watch it fails at once, as before."""
    run = tmp_path / "run"
    later = threading.Timer(1.5, shutil.copytree, (local_run, run))
    later.start()
    r = run_xlp("status", run, "--watch", "0.2", "--start-timeout", "60", "--json")
    later.join()
    assert r.returncode == 0, r.stderr
    assert "not launched yet" in r.stderr and "waiting up to 60 s" in r.stderr
    assert '"results": true' in r.stdout.splitlines()[-1]

    t = time.time()
    r = run_xlp("status", tmp_path / "never", "--watch", "0.2", "--start-timeout", "1")
    assert r.returncode == 1 and time.time() - t < 10
    assert "no plan.json" in r.stderr and "waited 1 s" in r.stderr
    r = run_xlp("status", tmp_path / "never")
    assert r.returncode == 1 and "waiting" not in r.stderr


class FakeJobs:
    """Ray's JobSubmissionClient as `xlp status --job` uses it, for a job that goes through `states` (one per
    look; None: the head does not answer that look) and ends with its driver's `code`."""

    def __init__(self, states: list, code: int | None, log: str):
        self.states, self.code, self.log = list(states), code, log

    def get_job_info(self, job_id: str):
        from types import SimpleNamespace

        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if state is None:
            raise ConnectionError("Failed to connect to Ray at address: http://127.0.0.1:8265.")
        ended = state in ("SUCCEEDED", "FAILED")
        return SimpleNamespace(status=state, driver_exit_code=self.code if ended else None, metadata={},
                               message=f"Job entrypoint command failed with exit code {self.code}, last available "
                                       f"logs (truncated to 20,000 chars):\n{self.log}" if state == "FAILED" else "")

    def get_job_logs(self, job_id: str) -> str:
        return self.log


def _returns(client: FakeJobs):
    return lambda address: client  # one client for every look, as its states run on


def test_status_job_watch_ends_with_the_drivers_exit_code(monkeypatch):
    """`xlp status --job ID --watch` follows the job (a line per change; a look the head does not answer is
    tried again), then prints the tail of its log and exits with the driver's exit code: what the recipe
    returns as the Slurm job's. (The recipe's own failing driver on Slurm: the README's cluster section.)"""
    from xlp.run import submit

    log = "Running entrypoint for job j1: xlp launch xlp-spec.json --quiet\nerror: 1 units failed"
    monkeypatch.setattr(submit, "_client", _returns(FakeJobs(["PENDING", "RUNNING", None, "FAILED"], 3, log)))
    r = run_xlp("status", "--job", "j1", "--address", "http://127.0.0.1:8265", "--watch", "0.01")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "j1: PENDING" in r.stdout and "j1: RUNNING" in r.stdout and "trying again" in r.stderr
    assert "j1: FAILED, driver exit code 3 (Job entrypoint command failed with exit code 3)" in r.stdout
    assert r.stdout.rstrip().endswith("error: 1 units failed")
    monkeypatch.setattr(submit, "_client", _returns(FakeJobs(["RUNNING", "SUCCEEDED"], 0, "done")))
    assert run_xlp("status", "--job", "j1", "--address", "http://x:8265", "--watch", "0.01").returncode == 0
    monkeypatch.setattr(submit, "_client", _returns(FakeJobs(["FAILED"], 3, log)))
    assert run_xlp("status", "--job", "j1", "--address", "http://x:8265").returncode == 0  # a look, no watch
    monkeypatch.setattr(submit, "_client", _returns(FakeJobs(["RUNNING", None], None, "")))
    r = run_xlp("status", "--job", "j1", "--address", "http://x:8265", "--watch", "0.01")
    assert r.returncode == 1 and "j1: Failed to connect" in r.stderr  # the head is gone for good
