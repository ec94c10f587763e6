"""The settings of a Reveal-and-Release run (`unlearnkit reveal ...`; see reveal/loop.py for the loop)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..data.collate import PromptFormat
from ..models.lora import LoraSettings
from ..objectives import build_objective
from ..precision import resolve_precision
from ..train.settings import TrainingSettings, setting
from .target import KINDS, Target

BANDITS = ("neural_ucb", "epsilon_greedy", "random")


@dataclass
class RevealConfig:
    """Reveal-and-Release: self-generated forget data + iterative O-LoRA unlearning of a target."""

    target: str = setting("", "what to forget: 'entity:<Name>', 'skill:code', 'behaviour:toxicity' (kind:name)")
    aliases: list[str] = setting([], "other names of an entity target")
    contrast_names: list[str] = setting([], "entity_contrast scorer: names of other entities of the same kind, known to "
                                            "the model, to contrast against (empty: John Smith, Maria Garcia, Wei Chen)")
    model: str = setting("default", "θ_ini: a model dir, hub id, .gguf file or 'default' (SmolLM2-135M offline)")
    scorer: str = setting("auto", "auto (entity: entity_contrast, code: code, toxicity: toxicity) | entity | "
                                  "entity_contrast | code | toxicity | hf:<hub classifier id>")
    run: str = setting("runs/reveal", "run directory")
    rounds: int = setting(3, "maximum number of reveal+unlearn rounds")
    stop_score: float = setting(0.05, "stop when a round's mean reveal score falls below this")
    # instruction pool and bandit
    n_recombined: int = setting(30, "recombined instructions added to the seed templates")
    paraphrases: int = setting(0, "model paraphrases per seed instruction added to the pool (0: none)")
    bandit: str = setting("neural_ucb", "neural_ucb | epsilon_greedy | random")
    bandit_params: dict[str, Any] = setting({}, "NeuralUCBConfig fields (e.g. nu, train_every, explore_first; reveal "
                                                "defaults: NEURAL_UCB_DEFAULTS) or epsilon")
    pulls: int = setting(16, "bandit pulls (instructions) per round")
    max_pulls_per_arm: int = setting(2, "pulls of one instruction per round at most, so the forget set comes from "
                                        "several instructions (0: no cap)")
    bandit_memory: bool = setting(True, "keep one bandit across rounds (false: a fresh bandit each round)")
    novelty_scope: str = setting("round", "novelty against this round's earlier generations (round: a fact still revealed "
                                          "after unlearning is worth collecting again) or every earlier round's (run)")
    samples: int = setting(4, "K: sampled completions per pull")
    temperature: float = setting(1.0, "sampling temperature")
    top_p: float = setting(0.95, "nucleus sampling p")
    max_new_tokens: int = setting(64, "tokens per completion")
    novelty_n: int = setting(3, "word n-gram size of the novelty term")
    novelty_weight: float = setting(1.0, "w in reward = score·((1−w) + w·novelty)")
    score_threshold: float = setting(0.3, "keep generations scoring at least this as forget data")
    score_reference: str = setting("base", "entity_contrast: rate generations with θ_ini (base: adapters off; only text "
                                           "carrying what θ_ini knew counts) or with the model entering the round (current)")
    mask_target: bool = setting(False, "entity targets: no loss on the name/alias tokens inside the generations (the "
                                       "loss then falls on what is said about the entity only)")
    dedupe_threshold: float = setting(0.7, "drop a generation whose word-bigram Jaccard with a kept one is >= this")
    # unlearning
    method: str = setting("npo", "objective name (unlearnkit.objectives.OBJECTIVES): npo, ga, grad_diff, simnpo, ...")
    params: dict[str, Any] = setting({}, "the objective's hyper-parameters, e.g. params.beta=0.1 params.retain=nll")
    retain: str = setting("", "retain data spec for the objective's retain term (params.retain=nll|kl)")
    reference: str = setting("previous", "reference log-probs: previous (the model entering the round) | base (all "
                                         "adapters disabled = θ_ini; a later round's rows, written by a partly unlearned "
                                         "model, then start at log π/π_ref of +100 nats or more)")
    steps: int = setting(20, "optimizer steps per round")
    lr: float = setting(1e-4, "AdamW learning rate (constant)")
    batch_size: int = setting(8, "forget rows per step (and retain rows, when used)")
    weight_decay: float = setting(0.0, "AdamW weight decay")
    max_grad_norm: float = setting(1.0, "gradient clipping (0: off)")
    ortho_weight: float = setting(0.5, "λ: weight of the O-LoRA orthogonality penalty vs earlier rounds")
    lora_r: int = setting(8, "LoRA rank per round")
    lora_alpha: int = setting(16, "LoRA alpha")
    lora_targets: list[str] = setting(["q_proj", "v_proj"], "LoRA target modules")
    template: str = setting("auto", "prompt template: auto | chat | plain")
    max_length: int = setting(256, "truncate training rows beyond this many tokens")
    precision: str = setting("auto", "auto | fp32 | bf16")
    export: bool = setting(True, "merge all rounds into <run>/model at the end")
    seed: int = setting(0, "seed (pool, bandit, sampling, LoRA init, batches)")

    def __post_init__(self):
        self.parsed_target()
        if self.bandit not in BANDITS:
            raise ValueError(f"bandit={self.bandit!r}: expected one of {BANDITS}")
        if self.score_reference not in ("current", "base"):
            raise ValueError(f"score_reference={self.score_reference!r}: expected 'current' or 'base'")
        if self.novelty_scope not in ("round", "run"):
            raise ValueError(f"novelty_scope={self.novelty_scope!r}: expected 'round' or 'run'")
        if self.reference not in ("base", "previous"):
            raise ValueError(f"reference={self.reference!r}: expected 'base' or 'previous'")
        for name in ("rounds", "pulls", "samples", "max_new_tokens", "steps", "batch_size", "lora_r", "novelty_n"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("lr", "temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        if self.max_pulls_per_arm < 0:
            raise ValueError(f"max_pulls_per_arm={self.max_pulls_per_arm} must be >= 0")
        for name in ("score_threshold", "stop_score", "novelty_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1]")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        if not 0.0 < self.dedupe_threshold <= 1.0:
            raise ValueError(f"dedupe_threshold={self.dedupe_threshold} must be in (0, 1]")
        if self.ortho_weight < 0:
            raise ValueError(f"ortho_weight={self.ortho_weight} must be >= 0")
        resolve_precision(self.precision)
        PromptFormat(template=self.template)
        obj = self.objective()
        if obj.needs_idk:
            raise ValueError(f"method={self.method!r} needs IdK answers, which a reveal run does not have; use "
                             "npo, ga, grad_diff, simnpo, wga, tnpo, ...")
        if obj.needs_retain and not self.retain:
            raise ValueError(f"method={self.method!r} with params.retain={obj.config.retain!r} needs retain "
                             "data: pass retain=<data spec>, or params.retain=none")

    def parsed_target(self) -> Target:
        kind, sep, name = self.target.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"target={self.target!r}: write kind:name with kind in {sorted(KINDS)}, e.g. "
                             "target='entity:Alia Karo', target=skill:code, target=behaviour:toxicity")
        kind = kind.strip()
        return Target(kind, name.strip(), tuple(self.aliases) if kind == "entity" else ())

    def objective(self):
        return build_objective(self.method, dict(self.params))

    @property
    def lora_settings(self) -> LoraSettings:
        return LoraSettings(self.lora_r, self.lora_alpha, 0.0, list(self.lora_targets))

    def training_settings(self) -> TrainingSettings:
        """A round's optimisation as the shared training settings: `steps` AdamW steps at a constant learning
        rate, every step logged, no checkpoints (the round saves its adapter itself)."""
        return TrainingSettings(max_steps=self.steps, lr=self.lr, weight_decay=self.weight_decay,
                                scheduler="constant", max_grad_norm=self.max_grad_norm, precision=self.precision,
                                save_steps=-1, logging_steps=1, seed=self.seed)
