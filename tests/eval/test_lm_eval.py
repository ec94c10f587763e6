"""suite=lm_eval: the harness on a tiny model with a local WMDP-format task, checked against hand log-likelihoods."""
from __future__ import annotations

import json
import sys

import pytest
import torch

from unlearnkit.eval.harness_tasks import LETTERS, MCQ, write_mcq_task
from unlearnkit.eval.lm_eval import (INSTALL_HINT, HarnessSettings, LmEvalMissing, harness_metrics, require_lm_eval,
                                     run_harness)
from unlearnkit.models import tiny_llama, tiny_model_and_tokenizer

DESCRIPTION = "The following are multiple choice questions (with answers) about glassworks.\n\n"
COLOURS = ["amber", "cobalt", "jade", "ivory", "onyx", "coral", "slate", "ruby"]


def _questions() -> list[MCQ]:
    return [MCQ(f"Which glaze does kiln {i} use?", tuple(COLOURS[(i + k) % 8] for k in range(4)), (3 * i) % 4)
            for i in range(10)]


@pytest.fixture(scope="module")
def mcq_task(tmp_path_factory):
    pytest.importorskip("lm_eval")
    out = tmp_path_factory.mktemp("tasks")
    write_mcq_task(out, "glass_mcq", _questions(), DESCRIPTION)
    return out


@pytest.fixture(scope="module")
def model_tok():
    texts = [q.prompt(DESCRIPTION) + " " + l for q in _questions() for l in LETTERS]
    _, tok = tiny_model_and_tokenizer(texts, vocab_size=400)
    model = tiny_llama(len(tok), hidden=64, layers=2, heads=4, intermediate=128, seed=3,
                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return model.eval(), tok


def _hand_loglik(model, tok, context: str, continuation: str) -> float:
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    cont = tok(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    return sum(logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont))


def test_accuracy_equals_hand_computed_loglikelihoods(model_tok, mcq_task):
    model, tok = model_tok
    results = run_harness(model, tok, HarnessSettings(["glass_mcq"], batch_size=4, include=str(mcq_task)),
                          log_samples=True)
    hand = [[_hand_loglik(model, tok, q.prompt(DESCRIPTION), " " + l) for l in LETTERS] for q in _questions()]
    by_doc = {s["doc_id"]: [r[0][0] for r in s["resps"]] for s in results["samples"]["glass_mcq"]}
    for i, row in enumerate(hand):
        assert by_doc[i] == pytest.approx(row, abs=1e-4)
    hand_acc = sum(max(range(4), key=row.__getitem__) == q.answer for row, q in zip(hand, _questions())) / 10
    metrics = harness_metrics(results)
    assert metrics["glass_mcq/acc"]["value"] == pytest.approx(hand_acc)
    assert metrics["glass_mcq/acc"]["n"] == 10
    assert metrics["glass_mcq/acc"]["stderr"] == pytest.approx((hand_acc * (1 - hand_acc) / 9) ** 0.5)


def test_harness_metrics_reshapes_groups_filters_and_missing_stderr():
    results = {"results": {"grp": {"acc,none": 0.5, "acc_stderr,none": 0.1, "alias": "grp"},
                           "t1": {"acc,none": 0.25, "acc_stderr,none": "N/A", "exact_match,strict": 0.75,
                                  "exact_match_stderr,strict": 0.2, "sample_len": 4},
                           "t2": {"acc,none": 1.0, "acc_stderr,none": 0.0}},
               "group_subtasks": {"grp": ["t1", "t2"]},
               "n-samples": {"t1": {"original": 8, "effective": 4}, "t2": {"original": 6, "effective": 6}}}
    m = harness_metrics(results)
    assert m["grp/acc"] == {"value": 0.5, "definition": "lm-eval:grp acc (filter none)", "n": 10, "stderr": 0.1}
    assert m["t1/acc"]["stderr"] is None and m["t1/acc"]["n"] == 4
    assert m["t1/exact_match[strict]"]["value"] == 0.75
    assert set(m) == {"grp/acc", "t1/acc", "t1/exact_match[strict]", "t2/acc"}


def test_adapter_path_and_merged_model_give_the_same_numbers(model_tok, mcq_task, tmp_path):
    from peft import LoraConfig, get_peft_model

    from unlearnkit.eval.suite import evaluate_run
    from unlearnkit.models import load_model
    from unlearnkit.runs import save_model_atomically

    model, tok = model_tok
    save_model_atomically(model, tok, tmp_path / "base")
    base, _ = load_model(str(tmp_path / "base"))
    torch.manual_seed(0)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                                 init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "lora_run" / "adapter")
    save_model_atomically(peft_model.merge_and_unload(), tok, tmp_path / "merged_run" / "model")
    kw = dict(tasks="glass_mcq", lm_eval_include=str(mcq_task), batch_size=4)
    adapter = evaluate_run(tmp_path / "lora_run", "lm_eval", **kw)
    merged = evaluate_run(tmp_path / "merged_run", "lm_eval", **kw)
    unchanged = evaluate_run(tmp_path / "base", "lm_eval", **kw)
    assert adapter == merged
    written = json.loads((tmp_path / "lora_run" / "eval" / "lm_eval.json").read_text())
    assert written["suite"] == "lm_eval" and written["metrics"] == adapter
    assert written["settings"]["tasks"] == ["glass_mcq"]
    harness_file = json.loads((tmp_path / "lora_run" / "eval" / "lm_eval_results.json").read_text())
    assert harness_file["results"]["glass_mcq"]["acc,none"] == adapter["glass_mcq/acc"]["value"]
    assert unchanged["glass_mcq/acc"]["n"] == 10
    # per choice: adapter == merged log-likelihoods, and both differ from the base's (the adapter is not a no-op)
    settings = HarnessSettings(["glass_mcq"], batch_size=4, include=str(mcq_task))
    models = [load_model(str(tmp_path / d))[0] for d in ("lora_run/adapter", "merged_run/model", "base")]
    lls = [_logliks(run_harness(m.eval(), tok, settings, log_samples=True)) for m in models]
    assert lls[0] == pytest.approx(lls[1], abs=1e-4)
    assert max(abs(a - b) for a, b in zip(lls[0], lls[2])) > 1e-3


def _logliks(results) -> list[float]:
    samples = sorted(results["samples"]["glass_mcq"], key=lambda s: s["doc_id"])
    return [r[0][0] for s in samples for r in s["resps"]]


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # makes `import lm_eval` raise ImportError
    with pytest.raises(LmEvalMissing, match=r"unlearnkit\[lm-eval\]"):
        require_lm_eval()
    assert "unlearnkit[lm-eval]" in INSTALL_HINT


def test_settings_refuse_bad_input(tmp_path):
    from unlearnkit.eval.command import EvaluateConfig

    with pytest.raises(ValueError, match="tasks="):
        HarnessSettings(" , ")
    with pytest.raises(ValueError, match="lm_eval_include"):
        HarnessSettings("t", include=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="num_fewshot"):
        HarnessSettings("t", num_fewshot=-1)
    with pytest.raises(ValueError, match="needs tasks="):
        EvaluateConfig(run="r", suite="lm_eval")
    assert HarnessSettings("wmdp_bio, mmlu,wmdp_bio").tasks == ["wmdp_bio", "mmlu"]


def test_unknown_task_names_the_closest_one(monkeypatch, mcq_task):
    import lm_eval.tasks

    from unlearnkit.eval.lm_eval import task_manager

    class FakeManager:  # the harness's full index takes ~20 s to build; its names are all this check reads
        def __init__(self, include_path=None, include_defaults=True):
            self.all_tasks = ["glass_mcq"] + (["wmdp_bio", "wmdp_cyber", "mmlu"] if include_defaults else [])

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", FakeManager)
    assert task_manager(HarnessSettings(["glass_mcq"], include=str(mcq_task))).all_tasks == ["glass_mcq"]  # local only
    assert "mmlu" in task_manager(HarnessSettings(["glass_mcq", "mmlu"], include=str(mcq_task))).all_tasks
    with pytest.raises(ValueError, match=r"unknown lm-eval task 'wmdp_bi'.*did you mean 'wmdp_bio'.*lm_eval_include"):
        task_manager(HarnessSettings(["wmdp_bi"], include=str(mcq_task)))
