"""probe.mdl: the online code's compression of each probe's training labels, a curve like accuracy, in the same
resumable grid (hashes of runs without it unchanged; turning it on redoes only the probe units)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import yaml
from conftest import copy_run, grid_spec, run_xlp, write_spec
from pydantic import BaseModel

from xlp.config import ProbeSpec
from xlp.models.checkpoints import Checkpoint
from xlp.run.units import ProbeUnit
from xlp.tasks import BUILT_IN


class ProbeSpecBeforeMdl(BaseModel):
    """ProbeSpec's keys as they were before `mdl` (and the MLP probe's `kind`, `hidden`, `dropout`) existed."""
    seeds: list[int] = [0]
    l2: float = 1e-3
    max_iter: int = 1000
    tol: float = 5e-5
    max_train_words: int | None = None
    layers_per_unit: int | None = None
    resample: str = "none"


def test_a_probe_unit_without_mdl_keeps_its_hash():
    def unit(probe):
        return ProbeUnit(ckpt=Checkpoint(0, "/c", digest="d0"), tasks=(BUILT_IN["pos"],), layers=(0, 1), src="en",
                         pooling="first", train_split="train", targets=(("en", "test"),), probe=probe, needs=("k",),
                         inputs=("h",))

    assert set(ProbeSpec.model_fields) - set(ProbeSpecBeforeMdl.model_fields) == {"mdl", "kind", "hidden", "dropout"}
    assert unit(ProbeSpec()).hash == unit(ProbeSpecBeforeMdl()).hash
    assert unit(ProbeSpec(mdl=True)).hash != unit(ProbeSpec()).hash


def test_a_new_definition_of_the_online_code_redoes_the_units_that_compute_it(tiny_series, tmp_path, monkeypatch):
    """Each probe unit of a run with probe.mdl hashes what its codelengths mean (xlp/probing/mdl.py's definition):
    other block fractions or a new CODE_VERSION give every such unit a new hash, so a relaunch of a run made under the
    old definition recomputes them instead of keeping old codelengths; units without mdl keep their hashes."""
    from xlp.probing import mdl
    from xlp.run.plan import make_plan

    plain = grid_spec(tmp_path, tiny_series, tmp_path / "run")
    coded = plain.model_copy(update={"probe": plain.probe.model_copy(update={"mdl": True})})

    def hashes(spec):
        return [u.hash for u in make_plan(spec).probe]

    before, plain_before = hashes(coded), hashes(plain)
    monkeypatch.setattr(mdl, "FRACTIONS", mdl.FRACTIONS[1:])  # no block at 0.1 %
    fractions = hashes(coded)
    monkeypatch.undo()
    monkeypatch.setattr(mdl, "CODE_VERSION", mdl.CODE_VERSION + 1)  # say, another prior
    version = hashes(coded)
    assert len(before) == 9 and not set(before) & set(fractions) and not set(before) & set(version)
    assert hashes(plain) == plain_before and not set(plain_before) & set(before)


def test_compression_is_a_curve_and_turning_mdl_on_redoes_only_the_probes(clean_grid, tmp_path):
    spec, run, first, _ = clean_grid
    copy, path = copy_run(spec, run, tmp_path)
    raw = yaml.safe_load(path.read_text())
    on = write_spec(tmp_path / "mdl.yaml", **{**raw, "probe": {**raw.get("probe", {}), "mdl": True}})
    r = run_xlp("launch", on, "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.splitlines()[-1])
    assert (summary["extracted"], summary["probed"], summary["failed"]) == (0, len(first.plan.probe), {})
    again = run_xlp("launch", on, "--json")
    summary = json.loads(again.stdout.splitlines()[-1])
    assert (summary["extracted"], summary["probed"]) == (0, 0)

    probes = pd.read_parquet(copy / "results/probes.parquet")
    before = pd.read_parquet(run / "results/probes.parquet")
    keys = ["step", "layer", "src_lang", "tgt_lang", "seed"]
    pos = probes[probes.task == "pos"].sort_values(keys)
    assert np.array_equal(pos.value, before.sort_values(keys).value)  # accuracy as it was
    mdl = probes[probes.task == "pos_mdl"]
    # one row per (step, layer, source, seed): the source's training labels, target = source
    assert len(mdl) == len(pos[pos.src_lang == pos.tgt_lang]) and (mdl.src_lang == mdl.tgt_lang).all()
    assert (mdl.metric == "compression").all() and (mdl.baseline == 1).all()
    assert np.allclose(mdl.value, mdl.uniform_codelength / mdl.codelength)
    per_label = mdl.uniform_codelength / mdl.n_train  # log2 K, K the tags present in the training words
    assert np.allclose(2 ** per_label, np.round(2 ** per_label)) and (2 ** per_label).between(10, 17).all()
    sums = np.stack([np.frombuffer(b, np.float32).reshape(2, -1).sum(1) for b in mdl.item_sums])
    assert np.allclose(sums[:, 0] / sums[:, 1], mdl.value, rtol=1e-4)  # the sentences' sums give the value back
    emergence = pd.read_parquet(copy / "results/emergence.parquet")
    curves = emergence[emergence.task == "pos_mdl"]
    assert len(curves) == 9 and curves.above_baseline_p.notna().all()  # 3 layers x 3 languages, with the bootstrap
    assert "pos_mdl" in (copy / "report/index.html").read_text()
