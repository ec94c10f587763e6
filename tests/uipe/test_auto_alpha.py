import math

import pytest

from unlearnkit.uipe.auto_alpha import auto_alpha


def test_finds_the_crossing_of_a_decreasing_utility():
    # u(α) = 1 / (1 + α²/4): u ≥ 0.95 exactly when α ≤ 2·sqrt(1/0.95 − 1) ≈ 0.4588
    true = 2 * math.sqrt(1 / 0.95 - 1)
    res = auto_alpha(lambda a: 1 / (1 + a * a / 4), tolerance=0.05, resolution=0.01, max_evals=20)
    assert res.alpha <= true < res.alpha + 0.01
    assert res.base_utility == 1.0 and res.threshold == pytest.approx(0.95)
    assert all(u >= res.threshold for a, u in res.evaluations if a <= res.alpha)
    assert res.evaluations[0][0] == 0.0


def test_flat_utility_goes_to_alpha_max():
    res = auto_alpha(lambda a: 0.7, alpha_max=4.0)
    assert res.alpha == 4.0 and "alpha_max" in res.stopped


def test_collapse_at_first_step_returns_zero():
    res = auto_alpha(lambda a: 1.0 if a == 0 else 0.1, resolution=0.1)
    assert res.alpha == 0.0


def test_budget_is_respected_and_answer_was_evaluated():
    calls = []
    res = auto_alpha(lambda a: calls.append(a) or math.exp(-a), tolerance=0.2, max_evals=5)
    assert len(calls) == 5 == len(res.evaluations)
    assert res.alpha in calls


@pytest.mark.parametrize("kw", [dict(tolerance=0), dict(alpha_start=-1), dict(max_evals=1)])
def test_bad_settings(kw):
    with pytest.raises(ValueError):
        auto_alpha(lambda a: 1.0, **kw)
