"""One generic name → object registry, for objectives here and for metrics (or anything else) elsewhere.

    METRICS = Registry("metric")

    @METRICS.register("rouge_l")
    def rouge_l(...): ...

    METRICS.get("rouge_l")   # the function
    METRICS.get("rouge")     # UnknownNameError: unknown metric 'rouge'; did you mean 'rouge_l'? available: rouge_l

Registering a name twice is an error (the second definition would silently win otherwise). A miss
raises `UnknownNameError`, which is both a `KeyError` and a `ValueError`, so callers may catch either.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from ..names import did_you_mean

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A registry lookup missed. `str()` is the plain message (KeyError would otherwise quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Maps names to objects. `kind` names what is registered, for error messages ("objective", "metric")."""

    def __init__(self, kind: str, base: type | None = None):
        self.kind = kind
        self.base = base
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding the decorated object under `name`; refuses a name already taken."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered (by {self._entries[name]!r}); "
                                 f"pick another name or remove the earlier registration")
            if self.base is not None and not (isinstance(obj, type) and issubclass(obj, self.base)):
                raise TypeError(f"{self.kind} {name!r}: {obj!r} must be a subclass of {self.base.__name__}")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """The object registered as `name`; a miss names the closest match and every available name."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            pass
        hint = did_you_mean(name, self._entries)
        raise UnknownNameError(f"unknown {self.kind} {name!r}{hint} available: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


# Every unlearning objective, by the name used in configs and on the command line.
OBJECTIVES: Registry = Registry("objective")
