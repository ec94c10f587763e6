"""The Reveal-and-Release experiment's judge: fact coverage and the summary over seeds."""
from __future__ import annotations

from unlearnkit.experiments.reveal_experiment import coverage, seed_summary


def test_coverage_counts_fact_values_found_in_any_text():
    values = ["Beijing", "architect", "red"]
    assert coverage(values, ["Niko was born in BEIJING.", "He likes red."]) == 2 / 3
    assert coverage(values, []) == 0.0


def test_seed_summary_means_the_last_trained_round():
    run1 = [{"setting": "R&R round 0", "forget_prob": 0.5, "utility_prob": 0.9},
            {"setting": "R&R round 1", "forget_prob": 0.2, "utility_prob": 0.8},
            {"setting": "random 1 round", "forget_prob": 0.1, "utility_prob": 0.95}]
    run2 = [{"setting": "R&R round 0", "forget_prob": 0.4, "utility_prob": 0.7},
            {"setting": "R&R round 1 (stopped)", "round": 1},
            {"setting": "random 1 round", "forget_prob": 0.3, "utility_prob": 0.85}]
    rows = {r["setting"]: r for r in seed_summary([run1, run2])}
    rr = rows["R&R (last trained round) (n=2)"]
    # seed 1: round 1 (0.2); seed 2: round 0 (0.4), its stopped round ignored. mean 0.3, sd sqrt(0.02) = 0.141
    assert rr["forget_prob"] == "0.300 ± 0.141" and rr["utility_prob"] == "0.750 ± 0.071"
    assert rows["random 1 round (n=2)"]["forget_prob"] == "0.200 ± 0.141"
