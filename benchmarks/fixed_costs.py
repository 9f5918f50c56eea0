"""The orchestrator's fixed costs at the paper's grid shape: 39 tiny checkpoints x 18 languages, POS, a few
sentences each, so each unit's own work is a few milliseconds and what is measured is xlp's cost per unit:
pre-flight and plan, scheduling and ledger per unit, a relaunch that has nothing to do, and `xlp status`.

The series is one tiny random XLM-R (the real XLM-R tokenizer) whose weights and tokenizer every checkpoint
links to; each checkpoint's config.json differs by one key, so every checkpoint has its own content identity
(identical files would be probed once, as duplicates). The 18 languages are codes ba..br whose train and
test files link to the shared UD treebanks (dev as train). Prints the load average beside the times.

    python benchmarks/fixed_costs.py [--checkpoints 39] [--languages 18] [--sentences 4] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from xlp.paths import shared_dir

TREEBANKS = [("UD_English-EWT", "en_ewt"), ("UD_German-GSD", "de_gsd"), ("UD_French-GSD", "fr_gsd"),
             ("UD_Spanish-GSD", "es_gsd"), ("UD_Russian-GSD", "ru_gsd"), ("UD_Finnish-TDT", "fi_tdt"),
             ("UD_Turkish-BOUN", "tr_boun"), ("UD_Chinese-GSDSimp", "zh_gsdsimp"), ("UD_Vietnamese-VTB", "vi_vtb")]


def tiny_series(root: Path, n: int) -> Path:
    """n checkpoints step_0 ... that share one tiny model's weights and tokenizer (links), each with its own
    config.json (one extra key), so each has its own identity."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM, XLMRobertaTokenizerFast

    base = root / "base"
    tok = XLMRobertaTokenizerFast(tokenizer_file=str(shared_dir() / "models" / "xlmr-tokenizer" / "tokenizer.json"))
    torch.manual_seed(0)
    cfg = XLMRobertaConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=514, pad_token_id=tok.pad_token_id,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    XLMRobertaForMaskedLM(cfg).save_pretrained(base)
    tok.save_pretrained(base)
    series = root / "series"
    for i in range(n):
        d = series / f"step_{i * 1000}"
        d.mkdir(parents=True)
        for f in base.iterdir():
            if f.name != "config.json":
                (d / f.name).symlink_to(f)
        config = json.loads((base / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**config, "benchmark_copy": i}, indent=1))
    return series


def _code(i: int) -> str:
    return "b" + chr(97 + i)  # ba, bb, ...: shaped like ISO codes


def ud_root(root: Path, n: int) -> Path:
    """n languages ba, bb, ... whose train (a treebank's dev) and test files link to the shared UD files."""
    ud, shared = root / "ud", shared_dir() / "ud"
    for i in range(n):
        folder, prefix = TREEBANKS[i % len(TREEBANKS)]
        d = ud / f"UD_Bench{i}-B"
        d.mkdir(parents=True)
        (d / f"{_code(i)}_b-ud-train.conllu").symlink_to(shared / folder / f"{prefix}-ud-dev.conllu")
        (d / f"{_code(i)}_b-ud-test.conllu").symlink_to(shared / folder / f"{prefix}-ud-test.conllu")
    return ud


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system) of a command: on a shared machine its CPU time is what the
    wall-clock time would be on an idle one (these commands run one thread)."""
    before, t = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - t, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoints", type=int, default=39)
    ap.add_argument("--languages", type=int, default=18)
    ap.add_argument("--sentences", type=int, default=4, help="train and test sentences per language")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="build (or reuse) the grid here and keep it")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp())
    spec_file = root / "fixed.yaml"
    if not spec_file.exists():
        series, ud = tiny_series(root, args.checkpoints), ud_root(root, args.languages)
        spec_file.write_text(yaml.safe_dump({
            "name": "fixed", "output": str(root / "run"), "checkpoints": [{"path": f"{series}/step_*"}],
            "data": {"ud_root": str(ud), "languages": [_code(i) for i in range(args.languages)],
                     "max_train_sentences": args.sentences, "max_test_sentences": args.sentences},
            "tasks": ["pos"], "layers": "all", "probe": {"seeds": [0]}, "cluster": {"num_cpus": args.cpus}}))
    env = {**os.environ, "XLP_CACHE": str(root / "cache")}  # a fresh digest cache: the first launch hashes
    xlp = [sys.executable, "-c", "from xlp.cli import main; main()"]  # the `xlp` command, this checkout

    shutil.rmtree(root / "run", ignore_errors=True)
    out = subprocess.run([*xlp, "launch", str(spec_file), "--json"], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"xlp launch failed ({out.returncode}):\n{out.stderr[-3000:]}")
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    plan, summary = events[0], events[-1]
    units = plan["extract"] + plan["probe"]
    ledger = [json.loads(p.read_text()) for p in (root / "run" / "ledger").rglob("*.json")]
    worker = sum(r.get("seconds", 0) for r in ledger)
    first_probe = min((r for r in ledger if "/task=" in r["key"]), key=lambda r: r["finished"] - r["seconds"])
    its_shards = max(r["finished"] for r in ledger if "/split=" in r["key"]
                     and r["key"].startswith(first_probe["key"].split("/")[0] + "/"))
    probe_wait = first_probe["finished"] - first_probe["seconds"] - its_shards
    launch_s = summary["seconds"]
    relaunch = [timed([*xlp, "launch", str(spec_file), "--quiet"], env) for _ in range(2)]
    status = [timed([*xlp, "status", str(root / "run")], env) for _ in range(3)]
    imports = timed([sys.executable, "-c", "import xlp.cli"], env)

    print(f"grid: {args.checkpoints} checkpoints x {args.languages} languages, POS, {args.sentences} train and "
          f"test sentences each: {plan['extract']} extraction + {plan['probe']} probe units = {units}; "
          f"{args.cpus} CPUs")
    print(f"first launch (CLI, fresh digest cache): {launch_s:6.1f} s, {1000 * launch_s / units:5.1f} ms per unit "
          f"wall (the units' own time {worker:.1f} s over {args.cpus} CPUs)")
    print(f"the first probe started {probe_wait:.2f} s after its checkpoint's last shard was written")
    for what, runs in (("no-op relaunch (CLI)", relaunch), ("xlp status (CLI)", status)):
        print(f"{what:<38}: {min(w for w, _ in runs):6.2f} s wall, {min(c for _, c in runs):5.2f} s CPU (runs: "
              + ", ".join(f"{w:.2f}/{c:.2f}" for w, c in runs) + ")")
    print(f"`import xlp.cli` alone: {imports[0]:.2f} s wall, {imports[1]:.2f} s CPU")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
