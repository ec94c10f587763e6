"""Scorers: how much a generation reveals the target, a value in [0, 1] per text.

A scorer is a callable `scorer(texts, **context) -> list[float]` (batched, one value per text). They are
registered by name and built with `get_scorer(name, **kwargs)`:

=============  =======================================================================================
``entity``     mentions of an entity's name/aliases, optionally fact keywords and the model's confidence
``entity_contrast``  what the model says about an entity beyond what it would say of a placeholder name
               (`contrast_scorer`; needs the model, bound with `use_model`)
``code``       Python that parses (`ast`) or code-shaped lines (keywords, brackets, assignments)
``toxicity``   `alt-profanity-check` (`profanity_check.predict_prob`, a linear SVM, offline)
``hf:<id>``    any hub text classifier through `transformers.pipeline("text-classification")` (online)
=============  =======================================================================================

`scorer_for_target(target)` picks the scorer a `Target` implies.
"""
from __future__ import annotations

import ast
import math
import re
from typing import Callable, Protocol, Sequence

from ..names import did_you_mean
from .target import Target


class Scorer(Protocol):
    name: str

    def __call__(self, texts: Sequence[str], **context) -> list[float]: ...


_REGISTRY: dict[str, Callable[..., Scorer]] = {}


def register_scorer(name: str):
    """Class decorator adding a scorer factory under `name`; a duplicate name is an error."""
    def deco(cls):
        if name in _REGISTRY:
            raise ValueError(f"scorer {name!r} is already registered (by {_REGISTRY[name].__qualname__}); "
                             "pick another name")
        _REGISTRY[name] = cls
        cls.name = name
        return cls
    return deco


def available_scorers() -> list[str]:
    return sorted(_REGISTRY) + ["hf:<hub classifier id>"]


def get_scorer(name: str, **kwargs) -> Scorer:
    """Build a registered scorer; ``hf:<id>`` builds an `HFClassifierScorer` for hub model `<id>`."""
    if name.startswith("hf:"):
        model_id = name[3:]
        if not model_id:
            raise ValueError("scorer name 'hf:' needs a model id, e.g. 'hf:s-nlp/roberta_toxicity_classifier'")
        return HFClassifierScorer(model_id, **kwargs)
    if name not in _REGISTRY:
        raise ValueError(f"unknown scorer {name!r}{did_you_mean(name, _REGISTRY)} "
                         f"available: {', '.join(available_scorers())}")
    return _REGISTRY[name](**kwargs)


def scorer_for_target(target: Target, **kwargs) -> Scorer:
    """The default scorer of a target: entity → `entity` (its surface forms), skill 'code' → `code`,
    behaviour 'toxicity' → `toxicity`. Other skills/behaviours need an explicit `get_scorer(...)`."""
    if target.kind == "entity":
        return get_scorer("entity", names=target.surface_forms, **kwargs)
    key = target.name.casefold()
    if target.kind == "skill" and key in ("code", "python", "coding"):
        return get_scorer("code", **kwargs)
    if target.kind == "behaviour" and key in ("toxicity", "toxic", "profanity"):
        return get_scorer("toxicity", **kwargs)
    raise ValueError(f"no default scorer for Target(kind={target.kind!r}, name={target.name!r}); build one with "
                     f"get_scorer(name) from: {', '.join(available_scorers())}")


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("scorers take a sequence of texts, got one string; wrap it in a list")
    texts = list(texts)
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"scorers take strings, got {type(bad[0]).__name__}")
    return texts


# --------------------------------------------------------------------------------------------- entity
def _surface_pattern(s: str) -> str:
    body = r"\s+".join(re.escape(w) for w in s.split())
    left = r"\b" if re.match(r"\w", s) else ""
    right = r"\b" if re.search(r"\w$", s) else ""
    return left + body + right


def mention_pattern(names: Sequence[str]) -> re.Pattern:
    """Case-insensitive regex matching any of `names` as whole words (any whitespace between words).

    Longest first so that 'Harry Potter' is matched before 'Harry'; \\b only where a form starts/ends with a
    word character (aliases like 'C++' stay matchable)."""
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise ValueError("mention_pattern needs at least one non-empty name")
    return re.compile("|".join(_surface_pattern(n) for n in sorted(names, key=len, reverse=True)), re.IGNORECASE)


@register_scorer("entity")
class EntityScorer:
    """Mentions of an entity, optionally with fact keywords and the model's own confidence.

    mention(x)  = min(count(x), saturation) / saturation, where count is the number of whole-word,
                  case-insensitive matches of any name/alias in x (a text naming the target 3 times by
                  default scores 1).
    facts(x)    = fraction of `facts` keywords found in x (only when `facts` is given).
    base(x)     = mention(x) without facts; (mention(x) + facts(x)) / 2 with facts.
    score(x)    = base(x) · ((1 − w) + w · exp(ℓ(x))) when `mean_logprobs` ℓ (the mean per-token log-prob the
                  model gave its own generation) is passed to the call, w = `confidence_weight`; otherwise
                  base(x). A confidently generated text about the target reveals more than a hesitant one.
    """

    def __init__(self, names: Sequence[str] = (), facts: Sequence[str] = (), saturation: int = 3,
                 confidence_weight: float = 0.5):
        if isinstance(names, str):
            names = (names,)
        names = [n.strip() for n in names if isinstance(n, str) and n.strip()]
        if not names:
            raise ValueError("entity scorer needs names=[the entity's name, aliases...]; "
                             "or use scorer_for_target(Target.entity(...))")
        if saturation < 1:
            raise ValueError(f"saturation={saturation} must be >= 1")
        if not 0.0 <= confidence_weight <= 1.0:
            raise ValueError(f"confidence_weight={confidence_weight} must be in [0, 1]")
        self.names = names
        self.facts = [f.strip() for f in ([facts] if isinstance(facts, str) else facts) if f.strip()]
        self.saturation = saturation
        self.confidence_weight = confidence_weight
        self._mention = mention_pattern(names)
        self._facts = [mention_pattern([f]) for f in self.facts]

    def mentions(self, text: str) -> int:
        return len(self._mention.findall(text))

    def __call__(self, texts: Sequence[str], mean_logprobs: Sequence[float] | None = None) -> list[float]:
        texts = _check_texts(texts)
        if mean_logprobs is not None and len(mean_logprobs) != len(texts):
            raise ValueError(f"mean_logprobs has {len(mean_logprobs)} values for {len(texts)} texts")
        out = []
        for i, t in enumerate(texts):
            base = min(self.mentions(t), self.saturation) / self.saturation
            if self._facts:
                base = 0.5 * base + 0.5 * sum(bool(p.search(t)) for p in self._facts) / len(self._facts)
            if mean_logprobs is not None:
                lp = float(mean_logprobs[i])
                if lp > 1e-6 or math.isnan(lp):
                    raise ValueError(f"mean_logprobs[{i}]={lp} is not a log-probability (must be <= 0)")
                base *= (1.0 - self.confidence_weight) + self.confidence_weight * math.exp(min(lp, 0.0))
            out.append(float(base))
        return out


# ----------------------------------------------------------------------------------------------- code
_FENCE = re.compile(r"```[\w+-]*\n(.*?)```", re.DOTALL)
_CODE_START = re.compile(
    r"^\s*(?:(?:def|class|import|from\s+[\w.]+\s+import|return|if|elif|else|for|while|try|except|finally|with|"
    r"raise|yield|lambda|async|await|assert|print|function|var|let|const|public|private|static)\b|#include|[@{}])")
_ASSIGN = re.compile(r"^\s*[\w.\[\]'\", ]+\s*(=|\+=|-=|\*=|/=)\s*[^=\s]")
_CALL = re.compile(r"^\s*[\w.]+\(.*\)\s*;?\s*$")
_SYMBOLS = set("()[]{}=:;<>+*/%_#")
# AST nodes a piece of prose can also parse into ("hello" is a Name, "3" a Constant): not evidence of code.
_TRIVIAL = (ast.Module, ast.Expr, ast.Name, ast.Constant, ast.Load, ast.Tuple)


@register_scorer("code")
class CodeScorer:
    """How code-like a text is, in [0, 1].

    score(x) = 1 if x (or a ```fenced``` block of x) parses with `ast.parse` into more than bare names and
    constants (prose such as "hello" parses too, so we require a def/assignment/call/import/... node);
    otherwise the fraction of its non-empty lines that look like code: a line starting with a keyword
    (def, class, import, return, for, if, ...), an assignment, a call, a line ending in ';' '{' '}' (not ':',
    which ends prose lines such as 'Here is the code:'),
    or a line whose share of symbol characters ()[]{}=:;... is at least `symbol_density`.
    """

    def __init__(self, symbol_density: float = 0.15):
        if not 0.0 < symbol_density <= 1.0:
            raise ValueError(f"symbol_density={symbol_density} must be in (0, 1]")
        self.symbol_density = symbol_density

    @staticmethod
    def parses(source: str) -> bool:
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            return False
        return any(not isinstance(node, _TRIVIAL) for node in ast.walk(tree))

    def code_line(self, line: str) -> bool:
        s = line.strip()
        if _CODE_START.match(s) or _ASSIGN.match(s) or _CALL.match(s) or s.endswith((";", "{", "}")):
            return True
        return sum(c in _SYMBOLS for c in s) / max(len(s), 1) >= self.symbol_density

    def score(self, text: str) -> float:
        blocks = _FENCE.findall(text)
        if any(self.parses(b) for b in blocks) or self.parses(text.strip()):
            return 1.0
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if not lines:
            return 0.0
        return sum(self.code_line(ln) for ln in lines) / len(lines)

    def __call__(self, texts: Sequence[str]) -> list[float]:
        return [self.score(t) for t in _check_texts(texts)]


# ------------------------------------------------------------------------------------------- toxicity
@register_scorer("toxicity")
class ToxicityScorer:
    """Probability of offensive language from `alt-profanity-check` (`profanity_check.predict_prob`).

    A linear SVM on a bag of words, calibrated: fast and offline, but it sees profanity, not subtle toxicity.
    For a neural classifier use ``get_scorer("hf:<hub id>")``. Install with `pip install unlearnkit[toxicity]`.
    """

    def __init__(self):
        try:
            from profanity_check import predict_prob
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("the 'toxicity' scorer needs alt-profanity-check: pip install 'unlearnkit[toxicity]' "
                              "(or alt-profanity-check); or use get_scorer('hf:<classifier id>')") from exc
        self._predict_prob = predict_prob

    def __call__(self, texts: Sequence[str]) -> list[float]:
        texts = _check_texts(texts)
        if not texts:
            return []
        return [float(min(max(p, 0.0), 1.0)) for p in self._predict_prob(texts)]


# ------------------------------------------------------------------------------------------ hub model
class HFClassifierScorer:
    """Probability of one label of a hub text classifier, via `transformers.pipeline("text-classification")`.

    `label` is the label whose probability is the score (e.g. 'toxic'); if None the classifier must have
    exactly two labels and `id2label[1]` is used. The pipeline is built on the first call, so constructing
    the scorer needs no network. Offline, the first call raises a `RuntimeError` saying so.
    """

    name = "hf"

    def __init__(self, model_id: str, label: str | None = None, device: str | int | None = None,
                 batch_size: int = 16, truncation: bool = True):
        self.model_id, self.label, self.device = model_id, label, device
        self.batch_size, self.truncation = batch_size, truncation
        self._pipe = None

    def _pipeline(self):
        if self._pipe is None:
            from transformers import pipeline

            try:
                self._pipe = pipeline("text-classification", model=self.model_id, device=self.device, top_k=None)
            except (OSError, ValueError) as exc:
                raise RuntimeError(
                    f"could not load hub classifier {self.model_id!r} for scorer 'hf:{self.model_id}' ({exc}). "
                    "It needs network access to the Hugging Face Hub or a local copy in the cache; offline, use "
                    "a local model directory (hf:/path/to/model) or the 'toxicity'/'code'/'entity' scorers."
                ) from exc
            id2label = self._pipe.model.config.id2label
            if self.label is None:
                if len(id2label) != 2:
                    raise ValueError(f"classifier {self.model_id!r} has labels {sorted(id2label.values())}; pass "
                                     "label=<the label meaning 'reveals the target'>")
                self.label = id2label[1]
            elif self.label not in id2label.values():
                raise ValueError(f"label={self.label!r} is not a label of {self.model_id!r}: "
                                 f"{sorted(id2label.values())}")
        return self._pipe

    def __call__(self, texts: Sequence[str]) -> list[float]:
        texts = _check_texts(texts)
        if not texts:
            return []
        pipe = self._pipeline()
        outs = pipe(texts, batch_size=self.batch_size, truncation=self.truncation)
        return [float(next((d["score"] for d in out if d["label"] == self.label), 0.0)) for out in outs]


from . import contrast_scorer  # noqa: E402,F401  registers 'entity_contrast' (it builds on this module)
