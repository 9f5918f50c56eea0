"""The torch probe against scikit-learn's LogisticRegression, converged, on the same real features."""

import numpy as np
import pytest
from conftest import MINILM, UD
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from xlp.data.conllu import read_conllu
from xlp.models.checkpoints import Checkpoint
from xlp.models.extract import FeatureExtractor
from xlp.probing.linear import fit_probes, majority_accuracy
from xlp.storage.features import features_table, layer_column
from xlp.tasks import BUILT_IN as TASKS

LAYERS = [2, 4]
L2 = 1e-3


@pytest.fixture(scope="module")
def minilm():
    """MiniLM features of a few hundred English and German sentences: {(lang, split): (table, X, upos)}."""
    ex = FeatureExtractor(Checkpoint(0, str(MINILM)), layers=LAYERS)
    files = {("en", "train"): (UD / "UD_English-EWT" / "en_ewt-ud-dev.conllu", 200),
             ("en", "test"): (UD / "UD_English-EWT" / "en_ewt-ud-test.conllu", 120),
             ("de", "train"): (UD / "UD_German-GSD" / "de_gsd-ud-dev.conllu", 200)}
    out = {}
    for key, (path, n) in files.items():
        sentences = read_conllu(path, n)
        vecs = ex.extract([s.forms for s in sentences])
        table = features_table(sentences, vecs, "float16")  # as stored: float16
        X = np.stack([vecs[layer] for layer in LAYERS]).astype(np.float16).astype(np.float32)
        out[key] = (table, X, np.array([t for s in sentences for t in s.upos]))
    return out


def _sklearn(X: np.ndarray, y: np.ndarray, C: float):
    scaler = StandardScaler().fit(X)
    with threadpool_limits(1):  # on a shared machine, threaded BLAS on small matrices only adds waiting
        clf = LogisticRegression(C=C, tol=1e-6, max_iter=5000).fit(scaler.transform(X), y)
    return lambda Xt: clf.predict(scaler.transform(Xt))


def test_converged_probes_match_sklearn_in_language_and_cross_lingual(minilm):
    """POS probes trained on en and on de, scored on en: every layer's accuracy within 0.3 points of
    scikit-learn's converged fit of the same objective; each probe reports its own convergence."""
    _, Xt, yt = minilm[("en", "test")]
    for src in ("en", "de"):
        _, X, y = minilm[(src, "train")]
        probes = fit_probes(X, y, l2=L2)  # the defaults: to the tolerance, not an iteration count
        assert probes.converged.all() and (probes.grad_norm <= 5e-5).all()
        assert (probes.iterations > 30).all()  # the old fixed budget would have stopped short
        ours = probes.accuracy(Xt, yt)
        for li in range(len(LAYERS)):
            theirs = (_sklearn(X[li], y, 1 / (L2 * len(y)))(Xt[li]) == yt).mean()
            assert abs(ours[li] - theirs) <= 0.003, (src, LAYERS[li], ours[li], theirs)
            assert ours[li] > majority_accuracy(yt) + (0.5 if src == "en" else 0.1)


def test_binary_arc_probe_matches_sklearn(minilm):
    """The arc probe (gold arcs vs sampled non-arcs, [h; d; h*d]) goes through the same solver: a
    two-class softmax with both columns penalised is scikit-learn's binary model at C = 2 / (l2 n)."""
    arc = TASKS["arc"]
    cols = [layer_column(layer) for layer in LAYERS[1:2]]
    X, y = arc.examples(minilm[("en", "train")][0], cols, 0)
    Xt, yt = arc.examples(minilm[("en", "test")][0], cols, 0)
    probe = fit_probes(X, y, l2=L2)
    assert probe.converged.all()
    theirs = (_sklearn(X[0], y, 2 / (L2 * len(y)))(Xt[0]) == yt).mean()
    assert abs(probe.accuracy(Xt, yt)[0] - theirs) <= 0.003
    assert theirs > 0.75


def test_batched_equals_one_at_a_time_and_any_start(minilm):
    """Each layer's probe reaches its own optimum whatever the others do and wherever it starts: fit
    alone, fit with the other layers, or started from another language's solution (a warm start)."""
    _, X, y = minilm[("en", "train")]
    _, Xt, yt = minilm[("en", "test")]
    both = fit_probes(X, y)
    single = [fit_probes(X[i], y) for i in range(len(LAYERS))]
    _, Xde, yde = minilm[("de", "train")]
    keep = np.isin(y, np.unique(yde))
    other = fit_probes(Xde, yde)  # another problem's optimum, over the same classes
    warm = fit_probes(X[:, keep], y[keep], init=other)
    cold = fit_probes(X[:, keep], y[keep])
    assert np.array_equal(warm.classes, other.classes) and (warm.iterations != cold.iterations).any()
    for li in range(len(LAYERS)):
        assert abs(single[li].accuracy(Xt[li:li + 1], yt)[0] - both.accuracy(Xt, yt)[li]) <= 0.002
        # two points that both meet the tolerance: the same accuracy, a handful of test words apart
        assert abs(warm.accuracy(Xt, yt)[li] - cold.accuracy(Xt, yt)[li]) <= 0.003
        assert np.mean(warm.predict(Xt)[li] != cold.predict(Xt)[li]) <= 0.005
        rel = float((warm.weight[li] - cold.weight[li]).norm() / cold.weight[li].norm())
        assert rel < 0.05, rel


def _plain_fit(Z, labels, K: int, l2: float, tol: float):
    """Mean cross-entropy + l2/2 ||W||^2 over K classes, minimised from zero by torch's own L-BFGS."""
    import torch

    W = torch.zeros(Z.shape[1], K, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(K, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=20000, tolerance_grad=tol, tolerance_change=0, history_size=20,
                            line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        value = torch.nn.functional.cross_entropy(Z @ W + b, labels) + l2 / 2 * (W * W).sum()
        value.backward()
        return value

    opt.step(loss)
    return W.detach(), b.detach()


def _plain_online_bits(X: np.ndarray, y: np.ndarray, l2: float, tol: float) -> float:
    """Voita & Titov's online codelength written out: shuffle, blocks at their fractions, the first block at
    log2 K bits a label, each later block coded by a probe fit from scratch (torch's own L-BFGS, float64) on
    the t items before it, over all K classes, mixed with the uniform code at weight 1 / (t + 1). Every block's
    probe has the same prior: summed cross-entropy + (l2 n)/2 ||W||^2, the full data's penalty."""
    import torch

    classes, yi = np.unique(y, return_inverse=True)
    n, K = len(y), len(classes)
    order = np.random.default_rng(0).permutation(n)  # xlp's transmission order (ORDER_SEED 0)
    Z = torch.tensor((X - X.mean(0)) / np.maximum(X.std(0), 1e-6), dtype=torch.float64)[order]
    labels = torch.tensor(yi[order])
    fractions = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)
    ends = sorted({min(max(int(f * n), 1), n) for f in fractions})
    bits = ends[0] * np.log2(K)
    for start, end in zip(ends, ends[1:]):
        W, b = _plain_fit(Z[:start], labels[:start], K, l2 * n / start, tol)  # its mean objective's l2
        p = torch.softmax(Z[start:end] @ W + b, 1)[torch.arange(end - start), labels[start:end]]
        eps = 1 / (start + 1)
        bits += float(-torch.log2((1 - eps) * p + eps / K).sum())
    return bits


def test_online_codelength_equals_a_plain_computation(minilm):
    """MDL of POS labels on one cell (MiniLM layer 4, 200 English sentences): xlp's online code (batched L-BFGS,
    each block warm-started from the last) equals the plain loop's codelength within 1 %, also on 64 of the
    dimensions, where the later blocks are large enough to be fit preconditioned; compression is
    uniform / online, and far above 1 for POS."""
    import torch

    from xlp.probing.linear import PRECONDITION_WORDS
    from xlp.probing.mdl import online_code

    _, X, y = minilm[("en", "train")]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared machine, threads on these small matrices only add waiting
    try:
        code = online_code(X[1:], y, L2, tol=1e-5)
        plain = _plain_online_bits(X[1], y, L2, 1e-5)
        # 64 of the dimensions: the later blocks (from PRECONDITION_WORDS items a dimension) fit preconditioned
        assert len(y) // 2 >= PRECONDITION_WORDS * 64
        narrow = online_code(X[1:, :, :64], y, L2, tol=1e-5)
        narrow_plain = _plain_online_bits(X[1, :, :64], y, L2, 1e-5)
    finally:
        torch.set_num_threads(threads)
    assert abs(code.online[0] - plain) <= 0.01 * plain, (code.online[0], plain)
    assert abs(narrow.online[0] - narrow_plain) <= 0.01 * narrow_plain, (narrow.online[0], narrow_plain)
    assert code.uniform == pytest.approx(len(y) * np.log2(len(np.unique(y))))
    assert code.compression[0] == pytest.approx(code.uniform / code.online[0]) and code.compression[0] > 3


def test_arc_labels_compress_below_the_uniform_code():
    """Arc's pair features (3 x 384 dimensions) let a probe fit on the first few dozen pairs memorise them: with
    the full data's per-item l2 in every block, its code for the next block was worse than a coin (compression
    0.37-0.70 on MiniLM). With one prior for every block (l2 scaled by n / t), MiniLM's middle layer (3) on
    1,000 English EWT sentences (26k pairs) compresses arc labels."""
    import torch

    from xlp.probing.mdl import online_code

    sentences = read_conllu(UD / "UD_English-EWT" / "en_ewt-ud-dev.conllu", 1000)
    vecs = FeatureExtractor(Checkpoint(0, str(MINILM)), layers=[3]).extract([s.forms for s in sentences])
    X, y = TASKS["arc"].examples(features_table(sentences, vecs, "float16"), [layer_column(3)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = online_code(X, y, L2)
    finally:
        torch.set_num_threads(threads)
    assert code.compression[0] > 1.2, code.compression


def _two_loop(g, pairs, gamma):
    """H g by Nocedal & Wright's two-loop recursion (Algorithm 7.4), one probe, pairs oldest first, float64."""
    q, alphas = g.copy(), []
    for s, y in reversed(pairs):
        alphas.append(s @ q / (s @ y))
        q -= alphas[-1] * y
    q *= gamma
    for (s, y), a in zip(pairs, reversed(alphas)):
        q += (a - y @ q / (s @ y)) * s
    return q


@pytest.mark.parametrize("iterations", [3, 20, 27])
def test_compact_inverse_hessian_equals_the_two_loop_recursion(iterations):
    """The fit's H g (compact form, products kept up to date as pairs arrive in a ring) is the two-loop
    recursion's on the same pairs: before and after the ring wraps, with skipped pairs left out."""
    import torch

    from xlp.probing.lbfgs import HISTORY, _inverse_hessian_times, _ring_orders

    rng = np.random.default_rng(iterations)
    k, P = 3, 40
    A = [a @ a.T + np.eye(P) for a in rng.normal(size=(k, P, P))]  # a convex quadratic per probe
    SY = torch.zeros(k, 2 * HISTORY, P)
    gram = torch.zeros(k, 2 * HISTORY, 2 * HISTORY, dtype=torch.float64)
    kept = torch.zeros(k, HISTORY, dtype=torch.bool)
    pairs = [[] for _ in range(k)]
    for it in range(iterations):
        slot = it % HISTORY
        for j in range(k):
            s = rng.normal(size=P).astype(np.float32)
            ok = bool(rng.random() > 0.2)  # about one pair in five skipped (its curvature test failed)
            SY[j, slot], SY[j, HISTORY + slot] = (torch.as_tensor(v * ok) for v in (s, (A[j] @ s).astype(np.float32)))
            kept[j, slot] = ok
            pairs[j].append((SY[j, slot].double().numpy(), SY[j, HISTORY + slot].double().numpy()) if ok else None)
        new = torch.bmm(SY, SY[:, slot::HISTORY].transpose(1, 2)).double()  # as the fit keeps them
        gram[:, :, slot::HISTORY], gram[:, slot::HISTORY, :] = new, new.transpose(1, 2)
    g = torch.as_tensor(rng.normal(size=(k, P)), dtype=torch.float32)
    gamma = torch.as_tensor(rng.uniform(0.1, 1, k), dtype=torch.float32)
    vg = torch.bmm(SY.double(), g.double()[:, :, None])
    Hg = _inverse_hessian_times(g, vg, SY, gram, kept, gamma, _ring_orders(torch.device("cpu"))[iterations % HISTORY])
    for j in range(k):
        recent = [p for p in pairs[j][-HISTORY:] if p is not None]
        plain = _two_loop(g[j].double().numpy(), recent, float(gamma[j]))
        assert np.abs(Hg[j].numpy() - plain).max() <= 1e-4 * np.abs(plain).max()


def test_standardised_features_are_the_plain_formula_and_scoring_standardises_alike():
    """A probe's features, standardised layer by layer in place and transposed: each layer's mean and population
    spread to float32 rounding (against float64), the spread floored at SCALE_FLOOR (a constant feature stays 0, not
    0 / 0), and the features exactly (x - mean) / scale, bit for bit what scoring computes from the same mean and
    scale (so a probe sees its training and test features standardised alike)."""
    import torch

    from xlp.probing.linear import SCALE_FLOOR, standardised

    X = np.random.default_rng(0).standard_normal((3, 500, 40)).astype(np.float32) * np.float32(7) + np.float32(2)
    X[1, :, 5] = 3.0  # no spread at all
    mean, scale, Zt = standardised(X, torch.device("cpu"))
    x64 = X.astype(np.float64)
    assert np.abs(mean.numpy() - x64.mean(1, keepdims=True)).max() <= 1e-6 * np.abs(x64).max()
    spread = np.maximum(x64.std(1, keepdims=True), SCALE_FLOOR)
    assert np.abs(scale.numpy() / spread - 1).max() <= 1e-6
    assert float(scale[1, 0, 5]) == np.float32(SCALE_FLOOR)
    assert Zt.shape == (3, 40, 500) and Zt.is_contiguous()
    assert torch.equal(Zt, ((torch.as_tensor(X) - mean) / scale).transpose(1, 2))
    assert torch.equal(Zt[1, 5], torch.zeros(500))


def test_preconditioned_fit_stops_on_the_plain_objectives_gradient(minilm, monkeypatch):
    """The fit runs over W' = A^-1 W, but its stopping test and its reported gradient are the plain objective's
    (scikit-learn's criterion), recomputed here by autograd in float64 at the returned probe (and at one fit on too
    few items to be preconditioned); and the
    preconditioner earns its place: at least a quarter fewer iterations than the same fit without it."""
    import torch

    from xlp.probing import linear

    _, X, y = minilm[("de", "train")]
    few = 600  # under linear.PRECONDITION_WORDS items per dimension: fit without the preconditioner
    assert X.shape[1] >= linear.PRECONDITION_WORDS * X.shape[2] > few
    for Xs, ys in ((X, y), (X[:, :few], y[:few])):
        probes = fit_probes(Xs, ys, l2=L2)
        classes = {c: i for i, c in enumerate(probes.classes)}
        labels = torch.as_tensor([classes[c] for c in ys])
        for li in range(len(LAYERS)):
            Z = ((torch.as_tensor(Xs[li]) - probes.mean[li]) / probes.scale[li]).double()
            W = probes.weight[li].double().requires_grad_()
            b = probes.bias[li].double().requires_grad_()
            loss = torch.nn.functional.cross_entropy(Z @ W + b, labels) + L2 / 2 * (W * W).sum()
            gW, gb = torch.autograd.grad(loss, [W, b])
            plain = max(gW.abs().max().item(), gb.abs().max().item())
            assert plain <= 5e-5 * 1.02 and abs(plain - probes.grad_norm[li]) <= 1e-6, (li, plain, probes.grad_norm)
    probes = fit_probes(X, y, l2=L2)

    def identity(Zt, shift, eigen=None):
        eye = torch.eye(Zt.shape[1]).expand(Zt.shape[0], -1, -1)
        return eye.clone(), eye.clone()

    monkeypatch.setattr(linear, "preconditioner", identity)
    plain_fit = fit_probes(X, y, l2=L2)
    assert plain_fit.converged.all()
    assert probes.iterations.sum() <= 0.75 * plain_fit.iterations.sum(), (probes.iterations, plain_fit.iterations)


def test_objective_in_blocks_of_words_is_the_objective_in_one(monkeypatch):
    """The CPU objective sums loss and gradient over blocks of words (a block stays in cache between its two
    products): the same loss and gradient as one block of every word, to float rounding, with a last block short."""
    import torch

    from xlp.probing import linear

    rng = np.random.default_rng(3)
    k, d, n, C = 2, 16, 1000, 5
    Zt = torch.as_tensor(rng.standard_normal((k, d, n)), dtype=torch.float32)
    onehot_t = torch.nn.functional.one_hot(torch.as_tensor(rng.integers(0, C, n)), C).T.float().contiguous()
    theta = torch.as_tensor(rng.standard_normal((k, d * C + C)) * 0.3, dtype=torch.float32)
    monkeypatch.setattr(linear, "BLOCK_WORDS", 300)
    loss, grad = linear.softmax_objective(Zt, onehot_t, 1e-2, theta)
    monkeypatch.setattr(linear, "BLOCK_WORDS", n)
    loss_one, grad_one = linear.softmax_objective(Zt, onehot_t, 1e-2, theta)
    assert torch.allclose(loss, loss_one, rtol=1e-6) and torch.allclose(grad, grad_one, atol=1e-6)
    assert grad.abs().max() > 1e-2  # a gradient worth comparing


def test_a_fit_is_the_same_bytes_with_any_thread_count(minilm):
    """A probe task's threads change with the CPUs its node has idle (xlp.run.resources): the fit must not depend
    on them (LAPACK's eigenvectors, for the preconditioner, do unless it runs on one thread)."""
    import torch

    _, X, y = minilm[("de", "train")]
    before = torch.get_num_threads()
    try:
        fits = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            fits.append(fit_probes(X, y, l2=L2))
    finally:
        torch.set_num_threads(before)
    for other in fits[1:]:
        assert torch.equal(fits[0].weight, other.weight) and torch.equal(fits[0].bias, other.bias)
