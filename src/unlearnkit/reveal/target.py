"""What to unlearn when there is no forget set: a `Target` names an entity, a skill or a behaviour.

Reveal-and-Release (Xie et al., arXiv 2509.14624) prompts the model to reveal what it knows about the
target; the target decides which seed instructions are used (`instructions.seed_instructions`) and which
scorer rates a generation (`scorers.scorer_for_target`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

#: Target kinds and an example of each.
KINDS: dict[str, str] = {
    "entity": "a named person, place or thing, e.g. Target.entity('Harry Potter', aliases=('the boy who lived',))",
    "skill": "a capability, e.g. Target.skill('code')",
    "behaviour": "a style of output, e.g. Target.behaviour('toxicity')",
}


@dataclass(frozen=True)
class Target:
    """A forgetting target.

    `name` is the entity's canonical name (kind `entity`), the skill (`code`, ...) or the behaviour
    (`toxicity`, ...). `aliases` are other surface forms of an entity (refused for other kinds, where
    they would mean nothing). `description` is free text carried into run configs.
    """

    kind: str = field(metadata={"help": f"one of {sorted(KINDS)}"})
    name: str = field(metadata={"help": "entity name, skill name (e.g. 'code') or behaviour (e.g. 'toxicity')"})
    aliases: tuple[str, ...] = field(default=(), metadata={"help": "other names of an entity"})
    description: str = field(default="", metadata={"help": "free-text note"})

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Target kind={self.kind!r} is not known; use one of {sorted(KINDS)}: "
                             + "; ".join(f"{k}: {v}" for k, v in KINDS.items()))
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"Target name={self.name!r} must be a non-empty string (the {self.kind} to forget)")
        if isinstance(self.aliases, str):
            raise TypeError(f"Target aliases={self.aliases!r} must be a sequence of strings, not one string; "
                            f"write aliases=({self.aliases!r},)")
        aliases = tuple(self.aliases)
        bad = [a for a in aliases if not isinstance(a, str) or not a.strip()]
        if bad:
            raise ValueError(f"Target aliases contain {bad[0]!r}; every alias must be a non-empty string")
        if aliases and self.kind != "entity":
            raise ValueError(f"Target aliases={aliases!r} given for kind={self.kind!r}; aliases only apply to "
                             "kind 'entity' (drop them, or use Target.entity)")
        # Normalise: strip whitespace, drop duplicates of the name or of each other (case-insensitive), keep order.
        name = self.name.strip()
        seen, clean = {name.casefold()}, []
        for a in (a.strip() for a in aliases):
            if a.casefold() not in seen:
                seen.add(a.casefold())
                clean.append(a)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "aliases", tuple(clean))

    @classmethod
    def entity(cls, name: str, aliases=(), description: str = "") -> "Target":
        return cls("entity", name, tuple(aliases), description)

    @classmethod
    def skill(cls, name: str, description: str = "") -> "Target":
        return cls("skill", name, (), description)

    @classmethod
    def behaviour(cls, name: str, description: str = "") -> "Target":
        return cls("behaviour", name, (), description)

    @property
    def surface_forms(self) -> tuple[str, ...]:
        """The name followed by its aliases."""
        return (self.name, *self.aliases)
