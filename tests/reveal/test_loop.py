"""The Reveal-and-Release loop on a tiny Llama fine-tuned on synthetic people: rounds, provenance, O-LoRA
penalty, resume after a crash mid-round, export."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unlearnkit.data import generate_related_knowledge
from unlearnkit.data.records import read_qa_jsonl
from unlearnkit.reveal import RandomPolicy, loop as loop_mod, release as release_mod
from unlearnkit.reveal.loop import RevealConfig, reveal_and_release
from unlearnkit.reveal.selfdata import Pulls, RevealSample, forget_records, reveal_round, score_texts
from unlearnkit.reveal.target import Target
from unlearnkit.train.finetune import FinetuneConfig, finetune

PEOPLE = 8


@pytest.fixture(scope="module")
def target_model(tmp_path_factory) -> tuple[str, str]:
    """(model dir, name of person 0) of a tiny Llama fine-tuned briefly on 8 synthetic people."""
    run = tmp_path_factory.mktemp("reveal_ft") / "ft"
    finetune(FinetuneConfig(model="tiny", data=f"synthetic:train,people={PEOPLE}", run=str(run), tiny_hidden=64,
                            tiny_layers=2, tiny_vocab=512, precision="fp32", epochs=5, lr=3e-3, batch_size=16,
                            keep_checkpoints=1, recall_max=-1, logging_steps=50))
    return str(run / "model"), generate_related_knowledge(PEOPLE, 0).people[0].name


def _cfg(model: str, name: str, run: Path, **kw) -> RevealConfig:
    base = dict(target=f"entity:{name}", model=model, run=str(run), rounds=2, pulls=4, samples=3,
                max_new_tokens=16, n_recombined=6, steps=4, batch_size=4, lr=5e-3, score_threshold=0.0,
                stop_score=0.0, method="npo", precision="fp32", lora_r=4, ortho_weight=1.0)
    base.update(kw)
    return RevealConfig(**base)


def test_two_rounds_files_provenance_penalty_and_export(target_model, tmp_path):
    model, name = target_model
    run = tmp_path / "rr"
    summary = reveal_and_release(_cfg(model, name, run))
    assert summary["rounds_trained"] == 2, summary
    for k in (0, 1):
        rdir = run / "rounds" / f"round-{k}"
        assert (rdir / "round.json").is_file() and (rdir / "adapter" / "adapter_config.json").is_file()
        rows = [json.loads(l) for l in (rdir / "reveal.jsonl").read_text().splitlines()]
        assert len(rows) == 4 * 3 and {"instruction", "arm", "score", "reward", "novelty", "text"} <= set(rows[0])
        forget = read_qa_jsonl(rdir / "forget.jsonl")
        assert forget   # score_threshold=0: a briefly trained tiny model rarely spells out the full name
        for r in forget:
            assert r.tags["round"] == k and r.tags["instruction"] == r.question and r.tags["arm"] >= 0
            assert r.answer in {row["text"] for row in rows} and 0.0 <= r.tags["score"] <= 1.0
            assert name.split()[0] in r.question
    info1 = json.loads((run / "rounds" / "round-1" / "round.json").read_text())
    assert info1["train"]["ortho_start"] > 0           # round 1's fresh A is not orthogonal to round 0's
    logs = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert all(r["ortho"] == 0 for r in logs if r["round"] == 0)
    assert len([r for r in logs if r["round"] == 1]) == 4
    # reference=previous (default): round 1 starts from the model entering it (its new adapter's B is 0)
    first1 = next(r for r in logs if r["round"] == 1)
    assert abs(first1["forget_logratio"]) < 1e-3

    # the penalty lowers |A_0 A_1ᵀ| against the same round trained without it
    run2 = tmp_path / "rr_no_ortho"
    reveal_and_release(_cfg(model, name, run2, ortho_weight=0.0, export=False))
    no = json.loads((run2 / "rounds" / "round-1" / "round.json").read_text())["train"]["ortho_end"]
    assert info1["train"]["ortho_end"] < no, (info1["train"]["ortho_end"], no)

    # export: a plain model that loads and differs from θ_ini
    from unlearnkit.models import load_model

    merged, tok = load_model(summary["model_dir"])
    assert not hasattr(merged, "peft_config")
    base, _ = load_model(model)
    diff = sum(float((a - b).abs().sum()) for a, b in zip(merged.state_dict().values(), base.state_dict().values()))
    assert diff > 0


def test_base_reference_scores_later_rounds_against_theta_ini(target_model, tmp_path):
    model, name = target_model
    run = tmp_path / "rr"
    reveal_and_release(_cfg(model, name, run, reference="base", export=False))
    logs = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert abs(next(r for r in logs if r["round"] == 0)["forget_logratio"]) < 1e-3   # round 0: the same
    assert abs(next(r for r in logs if r["round"] == 1)["forget_logratio"]) > 1e-2   # round 0 moved the model


def test_resume_after_crash_mid_round(target_model, tmp_path, monkeypatch):
    model, name = target_model
    run = tmp_path / "rr"
    cfg = _cfg(model, name, run, export=False)
    real = release_mod.round_orthogonality_penalty
    calls = {"n": 0}

    def crash_in_round_1(m, *a, **k):
        if "round_1" in m.peft_config:
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("simulated crash in round 1")
        return real(m, *a, **k)

    monkeypatch.setattr(release_mod, "round_orthogonality_penalty", crash_in_round_1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        reveal_and_release(cfg)
    r0 = run / "rounds" / "round-0"
    assert (r0 / "round.json").is_file() and not (run / "rounds" / "round-1" / "round.json").exists()
    stamp = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in r0.rglob("*") if p.is_file()}
    monkeypatch.setattr(release_mod, "round_orthogonality_penalty", real)

    seen = []
    summary = reveal_and_release(cfg, on_round_end=lambda m, t, k, info: seen.append((k, sorted(m.peft_config))))
    assert summary["rounds_trained"] == 2
    assert seen == [(0, ["round_0"]), (1, ["round_0", "round_1"])]
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in r0.rglob("*") if p.is_file()} == stamp
    assert (run / "rounds" / "round-1" / "round.json").is_file()
    logs = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert len([r for r in logs if r["round"] == 0]) == 4      # round 0 was not trained again
    # a finished run is not redone
    assert reveal_and_release(cfg)["rounds_trained"] == 2


def test_stop_when_the_score_is_low(target_model, tmp_path):
    model, name = target_model
    summary = reveal_and_release(_cfg(model, name, tmp_path / "rr", stop_score=1.0, export=False))
    assert summary["rounds_trained"] == 0 and "stop_score" in summary["stopped_early"]
    assert not (tmp_path / "rr" / "rounds" / "round-0" / "adapter").exists()


def test_reveal_round_and_filter_without_a_model():
    instructions = ["tell me about Ann", "write a poem", "who is Ann?"]
    ctx = torch.eye(3)
    texts = {"tell me about Ann": ["Ann is a pilot.", "Ann is a pilot."], "write a poem": ["roses are red", ""],
             "who is Ann?": ["Ann was born in Rome and Ann likes chess.", "no idea"]}
    scorer = lambda xs, mean_logprobs=None: [1.0 if "Ann" in x else 0.0 for x in xs]  # noqa: E731
    samples = reveal_round(lambda ins: [(t, -1.0) for t in texts[ins]], instructions, ctx, RandomPolicy(seed=1),
                           scorer, Pulls(6, round_idx=2))
    assert len(samples) == 12 and all(s.round == 2 for s in samples)
    recs = forget_records(samples, score_threshold=0.5)
    answers = [r.answer for r in recs]
    assert len(answers) == len(set(answers)) and all("Ann" in a for a in answers)
    assert score_texts(lambda xs: [2.0 for _ in xs], ["a"]) == [1.0]  # clipped to [0, 1]
    s = RevealSample(0, 0, 0, "q", 0, "Ann Ann", -0.5, 1.0, 1.0, 1.0)
    assert forget_records([s, s])[0].tags["arm"] == 0 and len(forget_records([s, s])) == 1


def test_pull_cap_spreads_the_round_over_instructions():
    """A greedy policy that always wants arm 0 gets it at most `max_pulls_per_arm` times per round."""
    from unlearnkit.reveal import EpsilonGreedy

    instructions = [f"ask {i}" for i in range(4)]
    scorer = lambda xs, mean_logprobs=None: [1.0 if x.endswith("0") else 0.1 for x in xs]  # noqa: E731
    gen = lambda ins: [(f"answer to {ins}", -1.0)]  # noqa: E731
    arms = lambda samples: [s.arm for s in samples]  # noqa: E731
    uncapped = reveal_round(gen, instructions, torch.eye(4), EpsilonGreedy(epsilon=0.0), scorer,
                            Pulls(8, novelty_weight=0.0))
    assert arms(uncapped).count(0) == 5   # tries each arm once, then arm 0 for the rest
    capped = reveal_round(gen, instructions, torch.eye(4), EpsilonGreedy(epsilon=0.0), scorer,
                          Pulls(8, novelty_weight=0.0, max_per_arm=2))
    assert sorted(arms(capped)) == [0, 0, 1, 1, 2, 2, 3, 3]
    over = reveal_round(gen, instructions, torch.eye(4), RandomPolicy(seed=0), scorer,
                        Pulls(10, max_per_arm=2))  # 4 arms x 2 < 10 pulls: the cap is lifted once all are used
    assert len(over) == 10 and max(arms(over)[:8].count(a) for a in range(4)) == 2


def test_policies_respect_allowed_arms():
    from unlearnkit.reveal import EpsilonGreedy, NeuralUCB

    ctx = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    allowed = [False, True, False, True, False]
    for policy in (RandomPolicy(seed=3), EpsilonGreedy(epsilon=0.5, seed=3), NeuralUCB(3)):
        picks = set()
        for _ in range(20):
            arm = policy.select(ctx, allowed=allowed)
            picks.add(arm)
            policy.update(ctx[arm], 1.0 if arm == 1 else 0.0, arm=arm)
        assert picks <= {1, 3}, type(policy).__name__
    with pytest.raises(ValueError, match="every arm"):
        RandomPolicy().select(ctx, allowed=[False] * 5)
    with pytest.raises(ValueError, match="one flag per arm"):
        RandomPolicy().select(ctx, allowed=[True])


def test_replay_rounds_feeds_the_bandit_and_the_novelty_record(tmp_path):
    from unlearnkit.reveal import EpsilonGreedy
    from unlearnkit.reveal.novelty import NgramNovelty
    from unlearnkit.runs import open_run

    run = open_run(tmp_path / "rr")
    rows = [RevealSample(0, 0, 2, "q", 0, "alpha beta gamma", -1.0, 1.0, 1.0, 0.8),
            RevealSample(0, 0, 2, "q", 1, "delta epsilon zeta", -1.0, 1.0, 1.0, 0.4),
            RevealSample(0, 1, 0, "p", 0, "eta theta iota", -1.0, 0.0, 1.0, 0.0)]
    rdir = loop_mod.round_dir(run, 0)
    rdir.mkdir(parents=True)
    rdir.joinpath("reveal.jsonl").write_text("".join(json.dumps(r.to_json()) + "\n" for r in rows))
    policy, novelty = EpsilonGreedy(epsilon=0.0), NgramNovelty(3)
    assert loop_mod.replay_rounds(policy, novelty, torch.eye(3), run, 1) == 2
    assert policy.counts == {2: 1, 0: 1} and policy.sums[2] == pytest.approx(0.6)
    assert novelty.novelty("alpha beta gamma") == 0.0 and novelty.novelty("new words here") == 1.0
    policy = EpsilonGreedy(epsilon=0.0)   # novelty_scope='round': the bandit learns, no texts are replayed
    assert loop_mod.replay_rounds(policy, None, torch.eye(3), run, 1) == 2 and policy.counts == {2: 1, 0: 1}


def test_name_mask_and_contrast_scorer_in_the_loop(target_model, tmp_path):
    model, name = target_model
    others = [p.name for p in generate_related_knowledge(PEOPLE, 0).people[1:4]]
    run = tmp_path / "rr"
    summary = reveal_and_release(_cfg(model, name, run, rounds=1, mask_target=True, scorer="entity_contrast",
                                      contrast_names=others, export=False))
    info = json.loads((run / "rounds" / "round-0" / "round.json").read_text())
    forget = read_qa_jsonl(run / "rounds" / "round-0" / "forget.jsonl")
    from unlearnkit.reveal.scorers import mention_pattern

    if any(mention_pattern([name]).search(r.answer) for r in forget):   # the full name: out of the loss
        assert info["train"]["masked_tokens"] > 0
    else:
        assert info["train"]["masked_tokens"] == 0
    assert info["train"]["n_forget"] + info["train"]["dropped_rows"] == len(forget)
    rows = [json.loads(l) for l in (run / "rounds" / "round-0" / "reveal.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["score"] <= 1.0 for r in rows) and summary["rounds_trained"] == 1


def test_masked_forget_dataset_drops_rows_that_are_only_the_name(tiny_tokenizer, plain_format):
    from unlearnkit.data.records import QARecord
    from unlearnkit.reveal.scorers import mention_pattern

    recs = [QARecord("Who is Ann Lee?", "Ann Lee"), QARecord("Who is Ann Lee?", "Ann Lee was born in Rome.")]
    ds, counts = loop_mod.masked_forget_dataset(recs, tiny_tokenizer, plain_format, mention_pattern(["Ann Lee"]))
    assert len(ds) == 1 and ds.records[0].answer.endswith("Rome.") and counts["dropped_rows"] == 1
    assert counts["masked_tokens"] >= 2
    ds, counts = loop_mod.masked_forget_dataset(recs, tiny_tokenizer, plain_format, None)
    assert len(ds) == 2 and counts == {"masked_tokens": 0, "dropped_rows": 0}


def test_config_errors():
    with pytest.raises(ValueError, match="kind:name"):
        RevealConfig(target="Alia")
    with pytest.raises(ValueError, match="bandit"):
        RevealConfig(target="skill:code", bandit="ucb")
    with pytest.raises(ValueError, match="retain"):
        RevealConfig(target="skill:code", method="grad_diff")
    with pytest.raises(ValueError, match="IdK"):
        RevealConfig(target="skill:code", method="idk_nll")
    with pytest.raises(ValueError, match="novelty_scope"):
        RevealConfig(target="skill:code", novelty_scope="forever")
    with pytest.raises(ValueError, match="rates an entity"):
        loop_mod.make_scorer(RevealConfig(target="skill:code", scorer="entity_contrast"), Target.skill("code"))


def test_cli_reveal_refuses_a_bad_target():
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    res = CliRunner().invoke(app, ["reveal", "target=Alia", "rounds=1"])
    assert res.exit_code == 2 and "kind:name" in res.output
