"""`xlp status` as a user reads it: failed units and their errors after a real failed unit, the units a live
driver is running, the ETA, and the human-readable table (not only `--json`); and `xlp launch` on the command
line when units fail: its exit code and the list of failures."""

import json
import os
import re
import subprocess
import sys
import time
from types import SimpleNamespace

from conftest import copy_run, run_xlp, snapshot

from xlp.storage import Store


def _row(table: str, stage: str) -> list[str]:
    """The cells of a stage's row in the status table."""
    line = next(x for x in table.splitlines() if re.match(rf"\W*{stage}\W", x))
    return [c.strip() for c in re.split(r"[│|]", line) if c.strip()]


def test_a_failed_unit_on_the_command_line_and_in_status(clean_grid, tmp_path, monkeypatch):
    """A probe unit that raises: `xlp launch` exits 1 and lists the failure (everything else is kept);
    `xlp status` counts it as failed with its error, in JSON and in the table; a relaunch clears it."""
    spec, run, _, clean_snapshot = clean_grid
    copy, path = copy_run(spec, run, tmp_path)
    key = "step=0/task=pos/layers=0_1_2/src=de"
    (copy / f"probes/{key}/part-0.parquet").unlink()
    monkeypatch.setenv("XLP_FAIL_UNIT", key)
    monkeypatch.setenv("COLUMNS", "200")
    r = run_xlp("launch", path, "--quiet")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    err = " ".join(r.stderr.split())
    assert "1 units failed (results hold everything else; relaunch to retry):" in err
    assert f"probe {key}: RuntimeError: injected failure in {key} (XLP_FAIL_UNIT)" in err

    st = json.loads(run_xlp("status", copy, "--json").stdout)
    assert {s: (v["done"], v["running"], v["pending"], v["failed"]) for s, v in st["stages"].items()} == {
        "extract": (18, 0, 0, 0), "probe": (8, 0, 0, 1)}
    assert st["stages"]["probe"]["errors"] == {key: f"RuntimeError: injected failure in {key} (XLP_FAIL_UNIT)"}
    assert not st["driver"]["running"] and st["driver"]["detail"] == "no driver"

    table = run_xlp("status", copy)
    assert table.returncode == 0, table.stderr
    assert _row(table.stdout, "extract")[:6] == ["extract", "18", "18", "0", "0", "0"]
    assert _row(table.stdout, "probe")[:6] == ["probe", "9", "8", "0", "0", "1"]
    assert f"failed probe {key}: RuntimeError: injected failure" in " ".join(table.stdout.split())
    assert "no driver" in table.stdout

    monkeypatch.delenv("XLP_FAIL_UNIT")
    assert run_xlp("launch", path, "--quiet").returncode == 0
    st = json.loads(run_xlp("status", copy, "--json").stdout)
    assert st["stages"]["probe"]["failed"] == 0 and st["stages"]["probe"]["errors"] == {}
    assert snapshot(copy) == clean_snapshot


def test_running_units_and_the_eta_while_a_driver_is_live(tmp_path, monkeypatch):
    """While a live driver holds the run's lock, the units it published as in flight are `running`; the ETA is
    the busy time per finished unit times the units left. Once the driver is gone its in-flight list is not
    believed. Ledger, lock and in-flight list written by the driver's own code."""
    from xlp.run.ledger import Ledger
    from xlp.run.lock import run_lock
    from xlp.run.schedule import publish_inflight
    from xlp.storage import Store

    monkeypatch.setenv("COLUMNS", "200")
    run = tmp_path / "run"
    store = Store(str(run))
    units = {"extract": {k: "h" for k in ("a", "b", "c", "d")}, "probe": {"p": "h"}}
    store.write_bytes("plan.json", json.dumps({"summary": {}, "units": units}).encode())
    ledger = Ledger(store)
    now = time.time()
    for key, finished in (("a", now - 40), ("b", now - 10)):  # 30 s busy over two units, a gap between them
        store.write_bytes(f"features/{key}.parquet", b"x" * 10)
        ledger.record("extract", key, "h", f"features/{key}.parquet", 10, seconds=15.0, rows=300)
        rec = json.loads(store.read_bytes(f"ledger/extract/{key}.json"))
        store.write_bytes(f"ledger/extract/{key}.json", json.dumps({**rec, "finished": finished}).encode())

    with run_lock(store):  # this process is the live driver; it has sent c out
        publish_inflight(store, {"ref": ("extract", SimpleNamespace(key="c"), 0)})
        st = json.loads(run_xlp("status", run, "--json").stdout)
        table = run_xlp("status", run).stdout
    ext = st["stages"]["extract"]
    assert st["driver"]["running"] and f"pid {os.getpid()}" in st["driver"]["detail"]
    assert (ext["done"], ext["running"], ext["pending"], ext["failed"]) == (2, 1, 1, 0)
    assert ext["running_units"] == ["c"]
    assert ext["rows_per_s"] == 600 / 30 and ext["eta_s"] == 15 * 2  # 15 s a unit, c and d left
    assert st["stages"]["probe"]["eta_s"] is None  # nothing finished to time it by
    assert _row(table, "extract") == ["extract", "4", "2", "1", "1", "0", "20.0", "0:00:30"]
    assert _row(table, "probe")[:6] == ["probe", "1", "0", "0", "1", "0"]
    assert "running extract c" in table

    st = json.loads(run_xlp("status", run, "--json").stdout)  # the driver is gone: c is not running
    ext = st["stages"]["extract"]
    assert not st["driver"]["running"] and (ext["running"], ext["pending"], ext["eta_s"]) == (0, 2, 30)


def test_a_local_folder_is_read_through_os_as_pyarrow_reads_it_and_status_imports_no_pyarrow(clean_grid, tmp_path):
    """A local store lists, sizes and reads files through `os` (what `xlp status` needs, without importing
    pyarrow and numpy, a quarter of its time): the same answers as pyarrow's filesystem on the same folder
    through a file:// URI, temporary files left out."""
    run = tmp_path / "run"
    for rel, data in {"plan.json": b"{}", "ledger/extract/a.json": b"[1]", "ledger/probe/x/b.json": b"22",
                      "ledger/probe/x/_tmp-0123-c.json": b"half"}.items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(data)
    (run / "empty").mkdir()
    local, arrow = Store(str(run)), Store(f"file://{run}")
    assert local.local and not arrow.local
    for prefix in ("", "ledger", "ledger/probe", "empty", "missing"):
        assert local.files(prefix) == arrow.files(prefix), prefix
    assert local.files("ledger") == {"ledger/extract/a.json": 3, "ledger/probe/x/b.json": 2}
    for rel in ("plan.json", "ledger", "empty", "missing", "ledger/probe/x/b.json"):
        assert (local.exists(rel), local.size(rel)) == (arrow.exists(rel), arrow.size(rel)), rel
    assert local.read_bytes("ledger/probe/x/b.json") == arrow.read_bytes("ledger/probe/x/b.json") == b"22"
    _, finished, _, _ = clean_grid
    assert Store(str(finished)).files("") == Store(f"file://{finished}").files("")
    code = ("import atexit, sys; atexit.register(lambda: print('pyarrow' in sys.modules, 'numpy' in sys.modules)); "
            f"from xlp.cli import main; sys.argv = ['xlp', 'status', {str(finished)!r}, '--json']; main()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split()[-2:] == ["False", "False"], out.stdout + out.stderr
    st = json.loads(out.stdout.splitlines()[0])
    assert st["stages"]["probe"]["done"] == st["stages"]["probe"]["total"] > 0, st["stages"]
