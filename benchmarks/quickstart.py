"""Time the whole quickstart (pretrain + probe grid + reducer) from an empty folder, then a no-op
relaunch of the finished run; print wall time and peak memory of the process tree (Ray workers included).

    python benchmarks/quickstart.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]


def run_measured(cmd: list[str], cwd: Path) -> tuple[float, float, float]:
    """Wall seconds, peak RSS of one process and peak summed RSS of the tree (GiB)."""
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=cwd)
    root = psutil.Process(proc.pid)
    peak_one = peak_tree = 0
    while proc.poll() is None:
        try:
            procs = [root] + root.children(recursive=True)
            rss = [p.memory_info().rss for p in procs if p.is_running()]
        except psutil.Error:
            rss = []
        if rss:
            peak_one, peak_tree = max(peak_one, max(rss)), max(peak_tree, sum(rss))
        time.sleep(0.25)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return time.time() - start, peak_one / 2**30, peak_tree / 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keep", help="run in this folder and keep it (default: a temporary one)")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="xlp-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    spec = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    spec["output"] = str(work / "quickstart")
    spec["pretrain"]["out"] = str(work / "mini-xlmr")
    spec["checkpoints"] = [{"path": str(work / "mini-xlmr" / "step_*")}]
    spec_path = work / "quickstart.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    xlp = [sys.executable, "-c", "from xlp.cli import main; main()"]

    pre = run_measured(xlp + ["pretrain", str(spec_path), "--quiet"], REPO)
    full = run_measured(xlp + ["launch", str(spec_path), "--quiet"], REPO)
    noop = run_measured(xlp + ["launch", str(spec_path), "--quiet"], REPO)
    print(f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB")
    print(f"pretrain (default schedule)      : {pre[0]:7.1f} s   peak RSS {pre[1]:.2f} GiB (tree {pre[2]:.2f} GiB)")
    print(f"probe grid + reducer             : {full[0]:7.1f} s   peak RSS {full[1]:.2f} GiB (tree {full[2]:.2f} GiB)")
    print(f"whole quickstart                 : {pre[0] + full[0]:7.1f} s")
    print(f"no-op relaunch of the finished run: {noop[0]:7.1f} s")


if __name__ == "__main__":
    main()
