"""EvalCallback picks the best step by the criterion, respecting the utility floor (stub evaluator, no model)."""
import json
from types import SimpleNamespace

from transformers import TrainerControl

from unlearnkit.eval.callback import BestCriterion, EvalCallback


def test_best_checkpoint_by_forget_quality_with_floor(tmp_path):
    script = {2: (0.1, 0.5), 4: (0.9, 0.1), 6: (0.5, 0.4), 8: (0.3, 0.6)}  # step: (forget_quality, model_utility)
    calls = []

    def evaluate(model):
        fq, mu = script[calls[-1]]
        return {"forget_quality": {"value": fq}, "model_utility": {"value": mu}}

    cb = EvalCallback(evaluate, every_n_steps=2, criterion=BestCriterion(floor=0.3), run_dir=tmp_path)
    saved = []
    for step in range(1, 9):
        control = TrainerControl()
        calls.append(step)
        cb.on_step_end(None, SimpleNamespace(global_step=step), control, model=object())
        saved.append(control.should_save)
    assert [h["step"] for h in cb.history] == [2, 4, 6, 8]
    assert cb.best["step"] == 6  # step 4 has higher FQ but utility 0.1 < floor 0.3
    assert saved == [False, True, False, False, False, True, False, False]
    best = json.loads((tmp_path / "eval" / "best.json").read_text())
    assert best["checkpoint"] == "checkpoints/step-6"
    assert len((tmp_path / "eval" / "callback.jsonl").read_text().splitlines()) == 4


def test_callback_module_does_not_import_train():
    import ast
    import inspect

    import unlearnkit.eval.callback as mod

    tree = ast.parse(inspect.getsource(mod))
    names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not any("train" in n.split(".") for n in names)
