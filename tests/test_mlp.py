"""MLP probes (`probe.kind: mlp`): against scikit-learn's MLPClassifier on the same objective, batched over layers
as one-at-a-time fits, and in a run: only the probes are redone, rows say their kind, `xlp compare` sets the runs
side by side."""

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import MINILM, UD, run_xlp
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from xlp.config import ProbeSpec
from xlp.data.conllu import read_conllu
from xlp.models.checkpoints import Checkpoint
from xlp.models.extract import FeatureExtractor
from xlp.probing.linear import majority_accuracy
from xlp.probing.mlp import fit_mlp_probes
from xlp.run.units import ProbeUnit, digest
from xlp.tasks import BUILT_IN
from xlp.version import __version__

LAYERS = [2, 4]
L2, HIDDEN = 1e-3, 32


@pytest.fixture
def one_thread():
    """Torch on one thread: on a shared 2-core machine a second thread on small matrices only adds waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def minilm_pos():
    """MiniLM features (as stored: float16) and UPOS tags of EWT dev (train) and test sentences."""
    ex = FeatureExtractor(Checkpoint(0, str(MINILM)), layers=LAYERS)
    out = {}
    for split, n in (("dev", 150), ("test", 100)):
        sentences = read_conllu(UD / "UD_English-EWT" / f"en_ewt-ud-{split}.conllu", n)
        vecs = ex.extract([s.forms for s in sentences])
        X = np.stack([vecs[layer] for layer in LAYERS]).astype(np.float16).astype(np.float32)
        out[split] = X, np.array([t for s in sentences for t in s.upos])
    return out


def test_mlp_probe_matches_sklearn_and_batching_changes_nothing(minilm_pos, one_thread):
    """On one cell (MiniLM layer 4, EWT POS) the MLP probe's accuracy is within 1 point of scikit-learn's
    MLPClassifier with the same objective (alpha = l2 * n), hidden size and gradient tolerance, started elsewhere;
    the layers fit together give the same weights as each layer fit alone."""
    (X, y), (Xt, yt) = minilm_pos["dev"], minilm_pos["test"]
    probes = fit_mlp_probes(X, y, l2=L2, hidden=HIDDEN, seed=0)
    assert probes.converged.all() and (probes.grad_norm <= 5e-5).all()
    ours = probes.accuracy(Xt, yt)
    scaler = StandardScaler().fit(X[1])
    with threadpool_limits(1):
        clf = MLPClassifier(hidden_layer_sizes=(HIDDEN,), alpha=L2 * len(y), solver="lbfgs", tol=5e-5, max_iter=5000,
                            max_fun=50000, random_state=0).fit(scaler.transform(X[1]), y)
    theirs = (clf.predict(scaler.transform(Xt[1])) == yt).mean()
    assert abs(ours[1] - theirs) <= 0.01, (ours[1], theirs)
    assert ours[1] > majority_accuracy(yt) + 0.5
    for li in range(len(LAYERS)):
        alone = fit_mlp_probes(X[li], y, l2=L2, hidden=HIDDEN, seed=0)
        assert alone.iterations[0] == probes.iterations[li]
        for name in ("hidden_weight", "hidden_bias", "weight", "bias"):
            assert torch.equal(getattr(alone, name)[0], getattr(probes, name)[li]), (li, name)
    other = fit_mlp_probes(X[:1], y, l2=L2, hidden=HIDDEN, seed=1)  # another start, another local optimum
    assert not torch.equal(other.weight[0], probes.weight[0])
    dropped = fit_mlp_probes(X[:1], y, l2=L2, hidden=HIDDEN, dropout=0.3, seed=0)
    assert not torch.equal(dropped.weight[0], probes.weight[0])
    assert np.array_equal(dropped.predict(Xt[:1]), fit_mlp_probes(X[:1], y, l2=L2, hidden=HIDDEN, dropout=0.3,
                                                                  seed=0).predict(Xt[:1]))  # the seed fixes the mask


def _plain_mlp_online_bits(X: np.ndarray, y: np.ndarray, l2: float, hidden: int, tol: float) -> float:
    """Voita & Titov's online codelength with an MLP probe, written out with torch's own L-BFGS in float64: the items
    shuffled (xlp's transmission order, seed 0), blocks at their fractions, the first at log2 K bits a label; each
    later block coded by a ReLU MLP fit on the t items before it, started from the previous block's weights (the first
    from Glorot-uniform weights drawn from torch seed 0, zero biases), minimising mean cross-entropy +
    (l2 n / t)/2 (||W1||^2 + ||W2||^2), its code mixed with the uniform one at weight 1 / (t + 1)."""
    classes, yi = np.unique(y, return_inverse=True)
    n, K, d = len(y), len(classes), X.shape[1]
    order = np.random.default_rng(0).permutation(n)
    Z = torch.tensor((X - X.mean(0)) / np.maximum(X.std(0), 1e-6), dtype=torch.float64)[order]
    labels = torch.tensor(yi[order])
    gen = torch.Generator().manual_seed(0)

    def glorot(fan_in, fan_out):
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        return ((torch.rand(fan_in * fan_out, generator=gen) * 2 - 1) * bound).double().view(fan_in, fan_out)

    W1, b1 = glorot(d, hidden), torch.zeros(hidden, dtype=torch.float64)
    W2, b2 = glorot(hidden, K), torch.zeros(K, dtype=torch.float64)
    params = [p.requires_grad_() for p in (W1, b1, W2, b2)]
    fractions = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)
    ends = sorted({min(max(int(f * n), 1), n) for f in fractions})
    bits = ends[0] * np.log2(K)
    for start, end in zip(ends, ends[1:]):
        lam = l2 * n / start
        opt = torch.optim.LBFGS(params, max_iter=20000, tolerance_grad=tol * np.sqrt(n / start), tolerance_change=0,
                                history_size=20, line_search_fn="strong_wolfe")

        def loss(opt=opt, start=start, lam=lam):
            opt.zero_grad()
            logits = (Z[:start] @ W1 + b1).clamp_min(0) @ W2 + b2
            value = torch.nn.functional.cross_entropy(logits, labels[:start]) + lam / 2 * ((W1 * W1).sum()
                                                                                           + (W2 * W2).sum())
            value.backward()
            return value

        opt.step(loss)
        with torch.no_grad():
            p = torch.softmax((Z[start:end] @ W1 + b1).clamp_min(0) @ W2 + b2, 1)[torch.arange(end - start),
                                                                                    labels[start:end]]
        eps = 1 / (start + 1)
        bits += float(-torch.log2((1 - eps) * p + eps / K).sum())
    return bits


def test_mlp_online_codelength_equals_a_plain_computation(minilm_pos, one_thread):
    """probe.mdl with probe.kind mlp: the online code's probes are MLPs; on one cell (MiniLM layer 4, EWT POS) xlp's
    codelength (batched L-BFGS, each block warm-started from the last) is within 1 % of a plain torch loop's, and
    the MLP's code differs from the linear probe's."""
    from xlp.probing.mdl import MlpShape, online_code

    X, y = minilm_pos["dev"]
    code = online_code(X, y, L2, tol=1e-4, mlp=MlpShape(HIDDEN, 0.0, 0))
    plain = _plain_mlp_online_bits(X[1], y, L2, HIDDEN, 1e-4)
    assert code.kind == "mlp" and abs(code.online[1] - plain) <= 0.01 * plain, (code.online[1], plain)
    linear = online_code(X[1:], y, L2, tol=1e-4)
    assert abs(linear.online[0] - code.online[1]) > 0.01 * plain and code.compression[1] > 2


def test_probe_kind_counts_in_the_hash_only_when_it_is_not_linear():
    """A linear probe unit's hash is the one it had before `probe.kind` existed (its MLP keys left out, whatever
    the spec says of them), so older runs are not redone; an MLP's kind, width and dropout each change it."""
    unit = ProbeUnit(ckpt=Checkpoint(0, "/c", digest="d0"), tasks=(BUILT_IN["pos"],), layers=(0, 1), src="en",
                     pooling="first", train_split="train", targets=(("en", "test"),), probe=ProbeSpec(),
                     needs=("k",), inputs=("h",))
    before = {f.name: getattr(unit, f.name) for f in dataclasses.fields(unit)
              if f.name not in ("options", "online_code")}  # None: not counted
    before.update(ckpt="d0", tasks=["pos"], layers=[0, 1], targets=[["en", "test"]], needs=["k"], inputs=["h"],
                  probe={k: v for k, v in ProbeSpec().model_dump().items()
                         if k not in ("kind", "hidden", "dropout", "mdl")})
    assert unit.hash == digest({"unit": "ProbeUnit", "code": __version__, **before})

    def with_probe(**probe):  # as the plan gives a unit its settings
        spec = ProbeSpec(**probe)
        return dataclasses.replace(unit, probe=spec.read_by(mlp=spec.kind == "mlp")).hash

    assert with_probe(hidden=8, dropout=0.5) == unit.hash  # a linear probe reads neither
    mlp = {with_probe(kind="mlp"), with_probe(kind="mlp", hidden=8), with_probe(kind="mlp", dropout=0.5)}
    assert len(mlp) == 3 and unit.hash not in mlp


def test_mlp_run_redoes_only_the_probes_and_compares_with_the_linear_run(clean_grid, tmp_path):
    """The clean grid's run copied and relaunched with `probe.kind: mlp` and `probe.mdl`: no feature is extracted
    again, every probe unit is redone, its rows (the online code's too) say `mlp` and its seeds differ (each seed its
    own start); a relaunch does nothing; `xlp compare` sets the linear and the MLP run side by side and says that
    their probes differ."""
    from xlp.run.driver import launch

    spec, run, _, _ = clean_grid
    copy = tmp_path / "mlp"
    shutil.copytree(run, copy)
    mlp_probe = spec.probe.model_copy(update={"kind": "mlp", "hidden": 16, "max_iter": 100, "mdl": True})
    spec = spec.model_copy(update={"output": str(copy), "name": "grid_mlp", "probe": mlp_probe})
    res = launch(spec, quiet=True)
    assert not res.failed and (res.extracted, res.probed) == (0, 9)
    assert launch(spec, quiet=True).probed == 0
    linear = pd.read_parquet(run / "results" / "probes.parquet")
    rows = pd.read_parquet(copy / "results" / "probes.parquet")
    mlp, code = rows[rows.task == "pos"], rows[rows.task == "pos_mdl"]
    assert set(linear.probe_kind) == {"linear"} and set(rows.probe_kind) == {"mlp"} and len(mlp) == len(linear)
    by_seed = code.pivot_table(index=["step", "layer", "src_lang"], columns="seed", values="codelength")
    assert len(code) == len(mlp[mlp.src_lang == mlp.tgt_lang]) and (by_seed[0] != by_seed[1]).all()
    assert not mlp.seed_invariant.any() and mlp.probe_iters.gt(0).all()
    by_seed = mlp.pivot_table(index=["step", "layer", "src_lang", "tgt_lang"], columns="seed", values="value")
    assert (by_seed[0] != by_seed[1]).mean() > 0.5
    ins = mlp.src_lang == mlp.tgt_lang
    assert (mlp[ins].value > mlp[ins].baseline).all()

    r = run_xlp("compare", str(run), str(copy), "--out", str(tmp_path / "cmp"))
    assert r.returncode == 0, r.stderr
    assert "kind: linear, mlp; hidden: 256, 16" in " ".join(r.stderr.split()) and "differ in probe" in r.stderr
    per_run = pd.read_parquet(tmp_path / "cmp" / "per_run.parquet")
    assert per_run.groupby("run").probe_kind.unique().map(list).to_dict() == {"grid": ["linear"],
                                                                               "grid_mlp": ["mlp"]}
    assert json.loads((copy / "spec.json").read_text())["probe"]["kind"] == "mlp"
