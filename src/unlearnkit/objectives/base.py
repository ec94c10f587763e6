"""The `Objective` interface: a named loss over an `UnlearnBatch`, with a hyper-parameter dataclass.

    total = forget_weight · forget_term(model, batch, ref) + retain_weight · RETAIN_TERMS[retain](...)

A subclass only writes `forget_loss` (calling the pure tensor functions of its module) and declares its
`Config`; the retain regulariser, the weights, the checks and the logging live here, once.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Mapping

import torch

from ..label_logprobs import one_pass
from ..logprobs import SequenceLogprobs
from ..names import did_you_mean
from .registry import OBJECTIVES
from .retain import NO_RETAIN, RETAIN_TERMS, retain_kinds


class NoInstanceWeightsError(NotImplementedError):
    """An objective that does not say what its per-sample G-effect weight is (see Objective.instance_weights)."""


def no_instance_weights(objective: "Objective", slp: SequenceLogprobs, batch: dict, ref) -> torch.Tensor:
    """NaN weights: set as `instance_weights = no_instance_weights` by objectives that have no such weight."""
    return torch.full(slp.sum.shape, math.nan)


def hp(default: Any, help: str) -> Any:
    """A hyper-parameter field: a default and the help string the CLI shows."""
    return field(default=default, metadata={"help": help})


_SCALARS = {"float": float, "int": int, "str": str, "bool": bool}


@dataclass
class ObjectiveConfig:
    """Hyper-parameters every objective has: the two term weights and the retain regulariser."""

    forget_weight: float = hp(1.0, "γ: weight of the forget term in loss = γ·forget + α·retain.")
    retain: str = hp(NO_RETAIN, "Retain regulariser: 'none', 'nll' (NLL of retain answers) or 'kl' "
                                "(KL(π_ini‖π_θ) on retain tokens; needs a reference); rmu also has 'hidden'.")
    retain_weight: float = hp(1.0, "α: weight of the retain regulariser (ignored when retain='none').")

    def __post_init__(self):
        self._check_types()
        self.require("forget_weight", self.forget_weight >= 0, "must be >= 0")
        self.require("retain_weight", self.retain_weight >= 0, "must be >= 0")
        if self.retain != NO_RETAIN:
            if self.retain not in RETAIN_TERMS:
                self.require("retain", False, f"unknown retain regulariser; expected one of {retain_kinds()}")
            missing = [f for f in RETAIN_TERMS.get(self.retain).config_fields if not hasattr(self, f)]
            self.require("retain", not missing,
                         f"this regulariser reads {missing}, which {type(self).__name__} does not have")

    def require(self, name: str, ok: bool, reason: str) -> None:
        """Raise ValueError naming the field, its value and why it is refused, unless `ok`."""
        if not ok:
            raise ValueError(f"{type(self).__name__}.{name}={getattr(self, name)!r}: {reason}")

    def _check_types(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            want = hints.get(f.name)
            want = _SCALARS.get(getattr(want, "__name__", ""), None)
            value = getattr(self, f.name)
            if want is None:
                continue
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, f.name, float(value))
            elif not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
                raise TypeError(f"{type(self).__name__}.{f.name}={value!r}: expected {want.__name__}, "
                                f"got {type(value).__name__}")


@dataclass
class UnlearnBatch:
    """One step's data, each part a padded dict from `pad_batch` (input_ids, labels, attention_mask, index).

    `idk[i]` must answer the same question as `forget[i]` (the IdK objectives pair them row by row).
    """

    forget: dict
    retain: dict | None = None
    idk: dict | None = None


class Objective:
    """Base of every objective. Subclasses set `Config`, `paper`, the `forget_*` flags, write `forget_loss`."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[ObjectiveConfig]] = ObjectiveConfig
    paper: ClassVar[str] = ""
    #: the `ReferenceProvider` methods the forget term calls (forget_logprobs, idk_logprobs, forget_logits, ...);
    #: the retain term declares its own (`RetainTerm.reference`). `reference_needs()` is their union, which
    #: `objectives.reference.build_reference` turns into cached log-probs, a frozen θ_ini or disabled adapters.
    forget_reference: ClassVar[tuple[str, ...]] = ()
    needs_idk: ClassVar[bool] = False
    #: the `UnlearnBatch` parts ("forget", "idk") the forget term scores with `answer_logprobs` under the trained
    #: model; with the retain term's (`RetainTerm.scores_answers`) they share one decoder pass (`one_pass`).
    #: Declared, not discovered: the objectives' contract test checks it against the calls a real loss makes.
    scores_answers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: ObjectiveConfig | Mapping[str, Any] | None = None):
        if config is None:
            config = self.Config()
        elif isinstance(config, Mapping):
            config = make_config(self.Config, config, owner=self.name or type(self).__name__)
        elif not isinstance(config, self.Config):
            raise TypeError(f"objective {self.name!r} takes a {self.Config.__name__} or a dict, "
                            f"got {type(config).__name__}")
        self.config = config

    @classmethod
    def hyperparameters(cls) -> list[tuple[str, Any, str]]:
        """(name, default, help) of every field of `Config`, for CLI help and docs."""
        return [(f.name, f.default, f.metadata.get("help", "")) for f in fields(cls.Config)]

    # -- what the trainer must provide -------------------------------------------------------------
    @property
    def needs_retain(self) -> bool:
        return self.config.retain != NO_RETAIN

    @property
    def forget_needs_reference(self) -> bool:
        return bool(self.forget_reference)

    def reference_needs(self) -> frozenset[str]:
        """Every reference quantity `loss` asks for (names of `ReferenceProvider` methods): the forget term's
        `forget_reference` and the retain regulariser's `RetainTerm.reference`. Declared, not discovered: the
        objectives' contract test checks each declaration against the calls a real loss makes."""
        retain = RETAIN_TERMS.get(self.config.retain).reference if self.needs_retain else ()
        return frozenset(self.forget_reference) | frozenset(retain)

    @property
    def needs_reference(self) -> bool:
        return bool(self.reference_needs())

    def check_inputs(self, *, retain: bool, idk: bool, reference: bool) -> None:
        """Raise ValueError if the objective needs data or a reference the caller does not have.

        The trainer calls this before training (with whether it has a retain set, an IdK set and a
        reference provider); `loss` calls it on every batch.
        """
        if self.needs_retain and not retain:
            raise ValueError(f"objective {self.name!r} needs a retain set (retain={self.config.retain!r}) but none "
                             f"was given: pass retain data, or set retain='none'")
        if self.needs_idk and not idk:
            raise ValueError(f"objective {self.name!r} needs IdK answers to the forget questions (batch.idk) but "
                             f"none were given: build them with the forget questions and refusal answers")
        if self.needs_reference and not reference:
            why = "reference log-probs on the forget data" if self.forget_needs_reference else \
                f"reference outputs for retain={self.config.retain!r}"
            raise ValueError(f"objective {self.name!r} needs {why} but ref is None: pass a FrozenModelReference, "
                             f"DisabledAdapterReference or CachedReference")

    # -- the loss ----------------------------------------------------------------------------------
    def loss(self, model, batch: UnlearnBatch, ref=None) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss to minimise and its terms as floats: forget_loss, retain_loss (if any), loss, extras."""
        if not isinstance(batch, UnlearnBatch):
            raise TypeError(f"objective {self.name!r}: batch must be an UnlearnBatch(forget=..., retain=..., idk=...), "
                            f"got {type(batch).__name__}")
        self.check_inputs(retain=batch.retain is not None, idk=batch.idk is not None, reference=ref is not None)
        cfg = self.config
        with one_pass(model, [getattr(batch, part) for part in self.scored_parts()]):
            forget, extra = self.forget_loss(model, batch, ref)
            total = cfg.forget_weight * forget
            logs = {"forget_loss": forget.item()}
            if self.needs_retain:
                term = RETAIN_TERMS.get(cfg.retain)
                retain, retain_extra = term.fn(model, batch.retain, ref, cfg)
                total = total + cfg.retain_weight * retain
                logs["retain_loss"] = retain.item()
                extra = {**extra, **retain_extra}
        logs["loss"] = total.item()
        logs.update(extra)
        return total, logs

    def scored_parts(self) -> tuple[str, ...]:
        """The batch parts `loss` scores with `answer_logprobs` under the trained model: the forget term's
        `scores_answers`, and "retain" when the retain term scores its answers too."""
        retain = ("retain",) if self.needs_retain and RETAIN_TERMS.get(self.config.retain).scores_answers else ()
        return tuple(self.scores_answers) + retain

    def forget_loss(self, model, batch: UnlearnBatch, ref) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError(f"{type(self).__name__} must implement forget_loss (src/unlearnkit/objectives/)")

    def instance_weights(self, slp: SequenceLogprobs, batch: dict, ref) -> torch.Tensor:
        """The per-sample weight w(s) with which the forget term moves θ along −w(s)·∇log p(s), shape (B,).

        `slp` is the current model's `sequence_logprobs` of the forget batch `batch` (no grad); `ref` the
        reference provider. The per-instance G-effect colours its scatter with it. Each objective family says
        what its weight is; one whose update is no weighting of ∇log p(s) (RMU, DPO-style) sets
        `instance_weights = no_instance_weights`. The base raises, so a new objective is never silently NaN.
        """
        raise NoInstanceWeightsError(
            f"objective {self.name!r} ({type(self).__name__}) does not define instance_weights, which the "
            f"per-instance G-effect needs: implement `instance_weights(self, slp, batch, ref)` in its class (the "
            f"per-sample weight on ∇log p(s)), or set `instance_weights = no_instance_weights` (from "
            f"unlearnkit.objectives.base) if its update is not a weighting of ∇log p(s); or run the G-effect "
            f"with per_instance=false")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


class UnweightedObjective(Objective):
    """An objective whose update is no per-sample weighting of ∇log p(s) (preference pairs, distillation,
    representation steering): its per-instance G-effect weights are NaN (`no_instance_weights`)."""

    instance_weights = no_instance_weights


def make_config(config_cls: type[ObjectiveConfig], values: Mapping[str, Any], owner: str = "") -> ObjectiveConfig:
    """`config_cls(**values)`, refusing unknown keys with the closest known one."""
    known = [f.name for f in fields(config_cls)]
    unknown = [k for k in values if k not in known]
    if unknown:
        hint = did_you_mean(unknown[0], known)
        raise ValueError(f"objective {owner!r} has no hyper-parameter {unknown[0]!r}{hint} known: {', '.join(known)}")
    return config_cls(**dict(values))


def register_objective(name: str):
    """Class decorator: set `cls.name` and add it to `OBJECTIVES`."""

    def add(cls: type[Objective]) -> type[Objective]:
        if not (isinstance(cls, type) and issubclass(cls, Objective)):
            raise TypeError(f"objective {name!r}: {cls!r} must subclass Objective")
        cls.name = name
        return OBJECTIVES.register(name)(cls)

    return add


def register_preset(name: str, base: type[Objective], doc: str, class_name: str | None = None,
                    **defaults: Any) -> type[Objective]:
    """Register `name` as `base` with other defaults (e.g. grad_diff = ga with retain='nll').

    The preset shares `base`'s code and field help strings; only the defaults differ.
    """
    base_fields = {f.name: f for f in fields(base.Config)}
    bad = [k for k in defaults if k not in base_fields]
    if bad:
        raise TypeError(f"preset {name!r}: {base.__name__}.Config has no field {bad[0]!r}")
    hints = typing.get_type_hints(base.Config)
    spec = [(k, hints[k], field(default=v, metadata=base_fields[k].metadata)) for k, v in defaults.items()]
    class_name = class_name or _camel(name)
    config_cls = dataclasses.make_dataclass(f"{class_name}Config", spec, bases=(base.Config,))
    config_cls.__doc__ = f"{base.Config.__name__} with defaults {defaults}."
    config_cls.__module__ = base.__module__
    cls = type(class_name, (base,), {"Config": config_cls, "__doc__": doc, "__module__": base.__module__})
    return register_objective(name)(cls)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
