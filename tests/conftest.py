"""Shared fixtures: real data from XLP_SHARED, real tiny Hugging Face checkpoints, a real local Ray."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from xlp.paths import shared_dir

# End-to-end tests over about 10 s on 2 cores: `python -m pytest -m "not slow"` is the edit-test loop (under 3
# minutes); CI runs them all. A name here that no test has fails the collection, so the list cannot go stale.
SLOW = {
    "test_pretrain.py::test_default_model_learns_pos_during_pretraining",
    "test_launch.py::test_submit_runs_the_driver_as_a_ray_job",
    "test_launch.py::test_minilm_pos_accuracy",
    "test_launch.py::test_minilm_arc_and_deprel_far_above_baselines",
    "test_launch.py::test_dropped_features_give_the_same_results",
    "test_launch.py::test_driver_killed_at_a_random_point_then_relaunched",
    "test_launch.py::test_crash_then_relaunch_finishes_identically",
    "test_launch.py::test_moved_series_is_not_redone_and_a_changed_checkpoint_is",
    "test_tasks.py::test_bpc_on_plain_text_equals_bpc_on_the_same_sentences_from_ud",
    "test_cluster.py::test_gpu_placement_and_a_killed_node_loses_nothing",
    "test_retrieval.py::test_minilm_sentence_tasks",
    "test_datasets.py::test_hub_cache_and_a_local_copy_give_the_numbers_of_todays_files",
    "test_structure.py::test_bootstrap_seeds_measure_probe_training_variance",
    "test_structure.py::test_a_researchers_own_task_runs_like_a_built_in_one",
    "test_structure.py::test_bpc_refuses_pickled_hub_weights",
    "test_structure.py::test_pretrain_then_launch_on_a_spec_with_its_own_data",
    "test_structure.py::test_identical_checkpoints_are_probed_once",
    "test_object_store.py::test_a_whole_run_lives_on_s3",
    "test_families.py::test_every_family_runs_pos_bpc_and_retrieval_through_launch",
    "test_probe.py::test_batched_equals_one_at_a_time_and_any_start",
    "test_probe.py::test_converged_probes_match_sklearn_in_language_and_cross_lingual",
    "test_mlp.py::test_mlp_probe_matches_sklearn_and_batching_changes_nothing",
    "test_mlp.py::test_mlp_online_codelength_equals_a_plain_computation",
    "test_mlp.py::test_mlp_run_redoes_only_the_probes_and_compares_with_the_linear_run",  # 15 s: the MLP online code
    "test_structural.py::test_uuas_root_accuracy_and_spearman_equal_a_plain_computation",
    "test_structural.py::test_structural_tasks_in_a_run_redo_only_what_changed",
    "test_probe.py::test_online_codelength_equals_a_plain_computation",
    "test_probe.py::test_arc_labels_compress_below_the_uniform_code",
    "test_mdl.py::test_compression_is_a_curve_and_turning_mdl_on_redoes_only_the_probes",
    "test_security.py::test_a_cluster_address_is_used_with_the_clusters_token",
    "test_null_series.py::test_nothing_to_learn_does_not_emerge",
    "test_null_series.py::test_a_random_walk_does_not_emerge",
    "test_data.py::test_a_test_only_treebank_cut_in_two_is_a_source_too",
    "test_slurm.py::test_recipe_runs_on_slurm_and_matches_a_local_run",
    "test_explore.py::test_choices_redraw_the_plots_offline_in_chromium",
    "test_published_data.py::test_published_data_runs_end_to_end",
    "test_launch.py::test_changed_shard_fails_its_checksum_and_is_redone",
    "test_launch.py::test_grid_resume_and_partial_redo",
    "test_launch.py::test_json_mode_streams_one_line_per_unit_then_a_summary",
    "test_align.py::test_minilm_aligns_enfr_well_above_the_diagonal_at_its_best_layer",
    "test_security.py::test_local_ray_listens_on_loopback_only_and_refuses_a_caller_without_the_token",
}


def pytest_collection_modifyitems(config, items):
    import pytest

    names = {f"{item.path.name}::{item.originalname}" for item in items}
    whole_suite = [Path(a).resolve() for a in config.args] == [Path(__file__).parent]
    if whole_suite and not (config.option.keyword or config.option.markexpr) and SLOW - names:
        raise pytest.UsageError(f"tests/conftest.py SLOW names tests that do not exist: {sorted(SLOW - names)}")
    for item in items:
        if f"{item.path.name}::{item.originalname}" in SLOW:
            item.add_marker(pytest.mark.slow)


SHARED = shared_dir()
os.environ.setdefault("XLP_SHARED", str(SHARED))
UD = SHARED / "ud"
MINILM = SHARED / "models" / "all-MiniLM-L6-v2"
XLMR_TOKENIZER = SHARED / "models" / "xlmr-tokenizer" / "tokenizer.json"


@functools.cache
def _xlmr_tokenizer():
    """The real XLM-R tokenizer, read once per session (parsing its 17 MB tokenizer.json costs about a second)."""
    from transformers import XLMRobertaTokenizerFast

    return XLMRobertaTokenizerFast(tokenizer_file=str(XLMR_TOKENIZER))


def make_tiny_xlmr(path: Path, seed: int, layers: int = 2, hidden: int = 32) -> Path:
    """A randomly initialised tiny XLM-R with the real XLM-R tokenizer, saved as a HF directory."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    tok = _xlmr_tokenizer()
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


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray node for the session (for each pytest-xdist worker), always shut down. Its dashboard
    serves the Jobs API that `xlp launch --submit` talks to, on free ports: the dashboard agent's default port is
    fixed, and a second node on the machine (another worker's) would send its jobs to the first node's agent."""
    import ray
    from ray._private.authentication.authentication_token_setup import (
        enable_token_auth_by_default,
        ensure_token_if_auth_enabled,
    )
    from ray.cluster_utils import Cluster

    from xlp.run.ray_session import local_node_config  # the node xlp starts keeps its warmed workers; so does this

    enable_token_auth_by_default()  # what ray.init does for a node it starts: token authentication on
    ensure_token_if_auth_enabled(create_token_if_missing=True)
    dashboard, agent = free_ports(2)
    # its own temp folder (short: Ray's socket paths live under it), not /tmp/ray, whose session_latest is the newest
    # node's on the machine
    temp = tempfile.mkdtemp(prefix="xlp-ray-", dir="/tmp")
    # Cluster records the head's address in /tmp/ray/ray_current_cluster and does not create /tmp/ray itself,
    # which a fresh machine lacks
    os.makedirs(os.path.dirname(ray._private.utils.get_ray_address_file(None)), exist_ok=True)
    node = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_port": dashboard, "dashboard_agent_listen_port": agent,
        "object_store_memory": 2 * 1024**3, "temp_dir": temp, "_system_config": local_node_config()})
    ray.init(address=node.address, logging_level="warning", log_to_driver=False)
    # the head's own address: a driver that joins reads it from where another worker's node may have written it
    DASHBOARD["url"] = "http://" + node.head_node.webui_url
    yield ray
    ray.shutdown()
    node.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def write_spec(path: Path, **spec) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def write_repo(root: Path, configs: dict[str, dict[str, dict[str, list]]]) -> None:
    """A dataset repository as the hub publishes one: `<config>/<split>-00000-of-00001.parquet` and a README
    whose YAML header lists each config's files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    card = []
    for config, splits in configs.items():
        for split, columns in splits.items():
            (root / config).mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table(columns), root / config / f"{split}-00000-of-00001.parquet")
        card.append({"config_name": config, "data_files": [{"split": s, "path": f"{config}/{s}-*"} for s in splits]})
    (root / "README.md").write_text(f"---\n{yaml.safe_dump({'configs': card})}---\n# a test dataset\n")


def hub_repo(cache: Path, repo: str, commit: str, configs) -> None:
    """The same repository in the hub cache's layout: datasets--org--name/snapshots/<commit>/... as links to
    blobs/<sha256>, and refs/main naming the commit."""
    import hashlib

    root = cache / f"datasets--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    write_repo(snapshot, configs)
    (root / "blobs").mkdir(exist_ok=True)
    for f in [p for p in snapshot.rglob("*") if p.is_file()]:
        blob = root / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        f.replace(blob)
        f.symlink_to(os.path.relpath(blob, f.parent))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)


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
    from xlp.config import load_spec

    return load_spec(write_spec(
        tmp_path / "grid.yaml", name="grid", output=str(output),
        checkpoints=[{"path": f"{series}/step_*"}],
        data={"ud_root": "${XLP_SHARED}/ud", "languages": list(languages),
              "max_train_sentences": 80, "max_test_sentences": 40},
        tasks=["pos"], layers="all", probe={"seeds": [0, 1]}, **{"cluster": {"extractors": 1}, **overrides}))


def copy_run(spec, run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of a finished run in `tmp_path/copy` and its spec pointing there (tmp_path/copy.yaml)."""
    import json
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    path = write_spec(tmp_path / "copy.yaml", **json.loads(spec.model_copy(update={"output": str(copy)})
                                                           .model_dump_json(exclude_defaults=True)))
    return copy, path


def snapshot(run: Path) -> dict[str, bytes]:
    return {f: (run / f).read_bytes() for f in GRID_RESULTS}


@pytest.fixture(scope="session")
def clean_grid(tmp_path_factory, tiny_series, ray_local):
    """An undisturbed run of the 3 x 3 grid, and its results' bytes."""
    from xlp.run.driver import launch

    tmp = tmp_path_factory.mktemp("clean")
    run = tmp / "run"
    spec = grid_spec(tmp, tiny_series, run)
    first = launch(spec, quiet=True)
    return spec, run, first, snapshot(run)


GPT_NEOX_TOKENIZER = SHARED / "models" / "gpt-neox-tokenizer" / "tokenizer.json"
FAMILIES = ("gpt_neox", "gpt2", "bloom", "llama", "olmo", "modernbert")


@functools.cache
def _family_tokenizer(kind: str):
    """A real tokenizer of the family's kind, with the special tokens its publishers configure."""
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import GPTNeoXTokenizer, PreTrainedTokenizerFast

    if kind in ("gpt_neox", "olmo"):  # Pythia and OLMo 1: the GPT-NeoX-20B BPE, no BOS added
        return GPTNeoXTokenizer(tokenizer_file=str(GPT_NEOX_TOKENIZER))
    if kind in ("gpt2", "bloom"):  # byte-level BPE, <|endoftext|> as BOS/EOS, none added
        return PreTrainedTokenizerFast(tokenizer_file=str(GPT_NEOX_TOKENIZER), bos_token="<|endoftext|>",
                                       eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    if kind == "llama":  # SentencePiece (XLM-R's), BOS added as Llama 2 does
        tok = Tokenizer.from_file(str(XLMR_TOKENIZER))
        tok.post_processor = TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 0)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                       pad_token="<pad>")
    if kind == "modernbert":  # ModernBERT: an OLMo-style BPE with BERT's specials, [CLS] text [SEP]
        tok = Tokenizer.from_file(str(GPT_NEOX_TOKENIZER))
        tok.add_special_tokens(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"])
        tok.post_processor = TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                       pad_token="[PAD]", mask_token="[MASK]")
    raise ValueError(f"unknown family {kind!r}; one of {FAMILIES}")


def make_tiny_family(kind: str, path: Path, seed: int, layers: int = 3, hidden: int = 32, positions: int = 128) -> Path:
    """A randomly initialised tiny model of a family, LM head included, saved as its publishers save
    it (save_pretrained of the *ForCausalLM / *ForMaskedLM class, and the tokenizer)."""
    import torch
    import transformers as tf

    tok = _family_tokenizer(kind)
    common = {"vocab_size": len(tok), "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 2,
              "intermediate_size": 2 * hidden, "max_position_embeddings": positions,
              "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    if kind == "gpt_neox":
        cfg, cls = tf.GPTNeoXConfig(**common), tf.GPTNeoXForCausalLM
    elif kind == "olmo":
        cfg, cls = tf.OlmoConfig(**common), tf.OlmoForCausalLM
    elif kind == "llama":
        cfg, cls = tf.LlamaConfig(**common, tie_word_embeddings=True), tf.LlamaForCausalLM
    elif kind == "gpt2":
        cfg, cls = tf.GPT2Config(vocab_size=len(tok), n_embd=hidden, n_layer=layers, n_head=2, n_positions=positions,
                                 bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id), tf.GPT2LMHeadModel
    elif kind == "bloom":
        cfg, cls = tf.BloomConfig(vocab_size=len(tok), hidden_size=hidden, n_layer=layers, n_head=2,
                                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id), tf.BloomForCausalLM
    elif kind == "modernbert":
        cfg = tf.ModernBertConfig(**{**common, "bos_token_id": tok.cls_token_id, "eos_token_id": tok.sep_token_id},
                                  cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
                                  global_attn_every_n_layers=2, local_attention=16)
        cls = tf.ModernBertForMaskedLM
    else:
        raise ValueError(f"unknown family {kind!r}; one of {FAMILIES}")
    torch.manual_seed(seed)
    cls(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path
