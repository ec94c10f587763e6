"""Membership-inference scores, ROC AUC and PrivLeak against hand-computed values."""
import zlib

import numpy as np
import pytest

from unlearnkit.eval import mia


def test_roc_auc_with_ties():
    # pairs (member, non-member): (0.9,0.5)=1 (0.9,0.1)=1 (0.5,0.5)=1/2 (0.5,0.1)=1 -> 3.5/4
    r = mia.roc_auc([0.9, 0.5], [0.5, 0.1], name="t")
    assert r.value == pytest.approx(0.875) and r.n == 4 and r.extra["n_members"] == 2


def test_loss_and_zlib_scores():
    assert mia.loss_scores([-1.5, -0.2]).tolist() == [-1.5, -0.2]
    text = "aaaaaaaaaa"
    z = len(zlib.compress(text.encode()))
    assert mia.zlib_scores([-2.0], [text])[0] == pytest.approx(-2.0 / z)
    # same loss: the less compressible text (more zlib bytes) gets the score closer to 0
    other = "q8#Lz!mW0p"
    assert len(zlib.compress(other.encode())) > z
    assert mia.zlib_scores([-2.0], [other])[0] > mia.zlib_scores([-2.0], [text])[0]


def test_min_k():
    lp = [-1.0, -2.0, -3.0, -4.0, -5.0]
    assert mia.min_k_scores([lp], 0.4)[0] == pytest.approx(-4.5)  # floor(5*0.4)=2 lowest: -5, -4
    assert mia.min_k_scores([lp], 0.1)[0] == pytest.approx(-5.0)  # at least one token
    assert mia.min_k_scores([lp], 1.0)[0] == pytest.approx(-3.0)
    with pytest.raises(ValueError, match="k="):
        mia.min_k_scores([lp], 0.0)


def test_min_k_plus_plus():
    # z = ((-1)-(-2))/1 = 1, ((-2)-(-2))/0.5 = 0 ; k=0.5 -> 1 lowest token -> 0
    assert mia.min_k_plus_plus_scores([[-1.0, -2.0]], [[-2.0, -2.0]], [[1.0, 0.5]], 0.5)[0] == pytest.approx(0.0)
    assert mia.min_k_plus_plus_scores([[-1.0, -2.0]], [[-2.0, -2.0]], [[1.0, 0.5]], 1.0)[0] == pytest.approx(0.5)


def test_reference_scores():
    assert mia.reference_scores([-1.0], [-2.0], "ratio")[0] == pytest.approx(-0.5)
    assert mia.reference_scores([-1.0], [-2.0], "difference")[0] == pytest.approx(1.0)


def test_privleak_muse_convention():
    # AUC 0.9 (forget still recognisable), oracle 0.5: ((1-0.9)-(1-0.5))/(1-0.5)*100 = -80
    assert mia.privleak(0.9, 0.5).value == pytest.approx(-80.0)
    assert mia.privleak(0.6, 0.6).value == pytest.approx(0.0)
    assert mia.privleak(0.3, 0.5).value == pytest.approx(40.0)
    with pytest.raises(ValueError, match="denominator"):
        mia.privleak(0.5, 1.0)


def test_auc_equals_sklearn_with_ties_and_refuses_nan():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    m, h = rng.integers(0, 6, 37).astype(float), rng.integers(1, 8, 23).astype(float)  # many ties
    want = roc_auc_score(np.r_[np.ones(m.size), np.zeros(h.size)], np.r_[m, h])
    assert mia.roc_auc(m, h).value == pytest.approx(want, abs=1e-15)
    with pytest.raises(ValueError, match="NaN"):
        mia.roc_auc([0.1, float("nan")], [0.2])


def test_evaluation_modules_do_not_import_scikit_learn_or_matplotlib():
    """`unlearnkit evaluate` loads these; scikit-learn alone cost ~1.5-4.5 s of start-up for one AUC."""
    import subprocess
    import sys

    code = ("import sys, unlearnkit.eval.suite, unlearnkit.eval.tofu, unlearnkit.eval.muse; "
            "print(sorted(m for m in ('sklearn', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
