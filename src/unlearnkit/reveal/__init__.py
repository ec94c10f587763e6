"""Reveal-and-Release building blocks (Xie et al., arXiv 2509.14624): unlearning without forget data.

The model is prompted with instructions (`instructions`) chosen by a bandit (`neural_ucb`, `bandits`) to
reveal what it knows about a `Target`; generations are rated by a scorer (`scorers`; for entities the
model-based `contrast_scorer`) damped by n-gram
novelty (`novelty`) and become forget data; unlearning runs in rounds, one LoRA adapter per round kept
orthogonal to the earlier ones (`olora`). `loop.reveal_and_release(RevealConfig(...))` runs the whole
iteration (`selfdata` holds one reveal round, `release` its training through `UnlearnTrainer`, `rounds` the
run's rounds on disk, `config` the settings).
"""
from .bandits import BanditPolicy, EpsilonGreedy, RandomPolicy
from .loop import RevealConfig, reveal_and_release
from .selfdata import Pulls, RevealSample, forget_records, reveal_round, sample_completions
from .instructions import (InstructionPool, build_pool, dedupe, embed_instructions, paraphrase, recombine,
                           seed_instructions)
from .neural_ucb import NeuralUCB, NeuralUCBConfig
from .novelty import NgramNovelty, jaccard, normalise_text, reveal_reward, word_ngrams
from .olora import (activate_rounds, add_round_adapter, lora_A_pairs, merge_rounds, orthogonality_penalty,
                    round_adapter_name, round_adapters, round_orthogonality_penalty)
from .scorers import (CodeScorer, EntityScorer, HFClassifierScorer, Scorer, ToxicityScorer, available_scorers,
                      get_scorer, mention_pattern, register_scorer, scorer_for_target)
from .contrast_scorer import EntityContrastScorer
from .target import Target

__all__ = [
    "BanditPolicy", "EpsilonGreedy", "RandomPolicy", "NeuralUCB", "NeuralUCBConfig",
    "InstructionPool", "build_pool", "dedupe", "embed_instructions", "paraphrase", "recombine", "seed_instructions",
    "NgramNovelty", "jaccard", "normalise_text", "reveal_reward", "word_ngrams",
    "activate_rounds", "add_round_adapter", "lora_A_pairs", "merge_rounds", "orthogonality_penalty",
    "round_adapter_name", "round_adapters", "round_orthogonality_penalty",
    "CodeScorer", "EntityContrastScorer", "EntityScorer", "HFClassifierScorer", "Scorer", "ToxicityScorer",
    "available_scorers", "get_scorer", "mention_pattern", "register_scorer", "scorer_for_target", "Target",
    "RevealConfig", "reveal_and_release", "Pulls", "RevealSample", "forget_records", "reveal_round", "sample_completions",
]
