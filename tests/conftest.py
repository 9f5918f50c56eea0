"""Shared fixtures: real data from XLP_SHARED, real tiny Hugging Face checkpoints, a real local Ray."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xlp.paths import shared_dir

SHARED = shared_dir()
os.environ.setdefault("XLP_SHARED", str(SHARED))
UD = SHARED / "ud"
MINILM = SHARED / "models" / "all-MiniLM-L6-v2"
XLMR_TOKENIZER = SHARED / "models" / "xlmr-tokenizer" / "tokenizer.json"


def make_tiny_xlmr(path: Path, seed: int, layers: int = 2, hidden: int = 32) -> Path:
    """A randomly initialised tiny XLM-R with the real XLM-R tokenizer, saved as a HF directory."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM, XLMRobertaTokenizerFast

    tok = XLMRobertaTokenizerFast(tokenizer_file=str(XLMR_TOKENIZER))
    torch.manual_seed(seed)
    cfg = XLMRobertaConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=514,
                           pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    XLMRobertaForMaskedLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_series(tmp_path_factory) -> Path:
    """Three tiny checkpoints step_0, step_100, step_200 (different random weights)."""
    root = tmp_path_factory.mktemp("ckpts")
    for i, step in enumerate((0, 100, 200)):
        make_tiny_xlmr(root / f"step_{step}", seed=i)
    return root


DASHBOARD: dict[str, str] = {}


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray node for the session, always shut down."""
    import ray

    # the dashboard serves the Jobs API that `xlp launch --submit` talks to
    ctx = ray.init(address="local", num_cpus=2, include_dashboard=True, logging_level="warning", log_to_driver=False)
    DASHBOARD["url"] = "http://" + ctx.dashboard_url
    yield ray
    ray.shutdown()


def write_spec(path: Path, **spec) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_xlp(*args: str) -> subprocess.CompletedProcess:
    """The real `xlp` entry point, in this process (no interpreter start-up): exit code and output."""
    from xlp.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["xlp", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


GRID_RESULTS = ["results/probes.parquet", "results/emergence.parquet", "results/probes.csv", "results/emergence.csv"]


def grid_spec(tmp_path: Path, series: Path, output: Path, languages=("en", "de", "vi"), **overrides):
    """The 3 checkpoints x 3 languages POS grid that the launch and cluster tests disturb."""
    from xlp.spec import load_spec

    return load_spec(write_spec(
        tmp_path / "grid.yaml", name="grid", output=str(output),
        checkpoints=[{"path": f"{series}/step_*"}],
        data={"ud_root": "${XLP_SHARED}/ud", "languages": list(languages),
              "max_train_sentences": 80, "max_test_sentences": 40},
        tasks=["pos"], layers="all", probe={"seeds": [0, 1]}, **{"cluster": {"extractors": 1}, **overrides}))


def snapshot(run: Path) -> dict[str, bytes]:
    return {f: (run / f).read_bytes() for f in GRID_RESULTS}


@pytest.fixture(scope="session")
def clean_grid(tmp_path_factory, tiny_series, ray_local):
    """An undisturbed run of the 3 x 3 grid, and its results' bytes."""
    from xlp.orchestrator.driver import launch

    tmp = tmp_path_factory.mktemp("clean")
    run = tmp / "run"
    spec = grid_spec(tmp, tiny_series, run)
    first = launch(spec, quiet=True)
    return spec, run, first, snapshot(run)
