"""The torch probe against scikit-learn's LogisticRegression on the same real features."""

import numpy as np
import pytest
from conftest import MINILM, UD
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from xlp.models.checkpoints import Checkpoint
from xlp.models.extract import FeatureExtractor
from xlp.tasks.probe import fit_probes, majority_accuracy
from xlp.tasks.ud import read_conllu


@pytest.fixture(scope="module")
def minilm_pos():
    ex = FeatureExtractor(Checkpoint(0, str(MINILM)), layers=[1, 3])
    tr = read_conllu(UD / "UD_English-EWT" / "en_ewt-ud-dev.conllu", 400)
    te = read_conllu(UD / "UD_English-EWT" / "en_ewt-ud-test.conllu", 200)
    f_tr, f_te = ex.extract([s.forms for s in tr]), ex.extract([s.forms for s in te])
    y_tr = np.array([t for s in tr for t in s.upos])
    y_te = np.array([t for s in te for t in s.upos])
    return (np.stack([f_tr[1], f_tr[3]]).astype(np.float32), y_tr,
            np.stack([f_te[1], f_te[3]]).astype(np.float32), y_te)


def test_batched_probes_match_sklearn(minilm_pos):
    X, y, Xt, yt = minilm_pos
    l2 = 1e-3
    probes = fit_probes(X, y, l2=l2, max_iter=300)
    ours = probes.accuracy(Xt, yt)
    for li in range(2):
        scaler = StandardScaler().fit(X[li])
        sk = LogisticRegression(C=1 / (l2 * len(y)), max_iter=2000).fit(scaler.transform(X[li]), y)
        theirs = (sk.predict(scaler.transform(Xt[li])) == yt).mean()
        assert abs(ours[li] - theirs) <= 0.005
        assert ours[li] > majority_accuracy(yt) + 0.5


def test_batched_equals_one_at_a_time(minilm_pos):
    X, y, Xt, yt = minilm_pos
    both = fit_probes(X, y, max_iter=300).accuracy(Xt, yt)
    single = [fit_probes(X[i], y, max_iter=300).accuracy(Xt[i:i + 1], yt)[0] for i in range(2)]
    np.testing.assert_allclose(both, single, atol=0.003)
