"""The metric registry: one place for a metric's suite, key, display name, direction and function."""
import pytest

from unlearnkit.eval import metric_registry as reg
from unlearnkit.report.collect import RunRecord
from unlearnkit.report.tables import all_tables


@pytest.fixture()
def scratch_registry():
    """Registrations made by a test disappear after it."""
    saved = dict(reg.SUITES), list(reg._ORDER), dict(reg.METRICS._entries)
    yield
    for live, old in zip((reg.SUITES, reg._ORDER, reg.METRICS._entries), saved):
        live.clear()
        live.update(old) if isinstance(live, dict) else live.extend(old)


def test_every_metric_is_well_formed():
    for name, spec in reg.METRICS.items():
        assert name == f"{spec.suite}:{spec.key}" and spec.suite in reg.SUITES
        assert spec.display and spec.short and spec.direction in reg.ARROWS
        assert callable(spec.function()), name   # its source names a real function


def test_headers_carry_the_direction():
    assert reg.metric("tofu:forget_quality").header == "Forget quality ↑"
    assert reg.metric("tofu:forget/rouge_l_recall").header == "Forget ROUGE ↓"
    assert reg.metric("muse:privleak").header == "PrivLeak (→0)"
    assert reg.metric("tofu:mia/min_k").header == "MIA min-k AUC"
    with pytest.raises(KeyError, match="did you mean 'tofu:forget_quality'"):
        reg.metric("tofu:forget_qualty")


def test_refusals(scratch_registry):
    with pytest.raises(ValueError, match="already registered"):
        reg.register_metric(reg.MetricSpec("tofu", "forget_quality", "again"))
    with pytest.raises(ValueError, match="suite 'nope' is not registered"):
        reg.register_metric(reg.MetricSpec("nope", "x", "X"))
    with pytest.raises(ValueError, match="direction='better'"):
        reg.MetricSpec("tofu", "x", "X", "better")


def test_a_new_suite_gets_a_leaderboard_without_touching_the_report(scratch_registry, tmp_path):
    reg.register_suite("lm_eval_test", "lm-eval")
    reg.register_metric(reg.MetricSpec("lm_eval_test", "mmlu/acc", "MMLU acc.", reg.UP, "MMLU"))
    runs = [RunRecord(path=tmp_path / "a", kind="unlearn", config={"method": "ga"},
                      metrics={"lm_eval_test": {"mmlu/acc": 0.25}}),
            RunRecord(path=tmp_path / "b", kind="unlearn", config={"method": "npo"})]
    board = [t for t in all_tables(runs) if t.title == "Leaderboard (lm-eval metrics)"]
    assert len(board) == 1 and board[0].headers[-1] == "MMLU acc. ↑"
    assert [row[2] for row in board[0].rows] == ["a"] and board[0].rows[0][-1] == "0.250"
    assert not any(t.title.startswith("Leaderboard (TOFU") for t in all_tables(runs))   # no run has TOFU metrics
