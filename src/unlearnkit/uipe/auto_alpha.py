"""Automatic choice of the UIPE coefficient α without the test forget set.

UIPE's stated open problem is that α must be picked by hand per base method. Our rule uses only what a
user has: a *held-out retain slice* (never the forget set) and the base run itself.

**Rule.** Let u(α) be the retain utility of θ_un + α(θ_un − θ_ini) on the held-out retain slice
(default: mean answer probability, exp(−mean token NLL), teacher-forced, no generation). Choose the
largest α ∈ [0, α_max] with u(α) ≥ (1 − tolerance)·u(0): push the extrapolation as far as the model can
afford before its retained knowledge degrades by more than `tolerance`.

**Search.** u is (close to) non-increasing in α, so the threshold crossing is found by *bracketing*
(α doubles from `alpha_start` until the tolerance is violated or α_max is hit) followed by *bisection*
on the bracket, stopping early once the bracket is narrower than `resolution` or `max_evals` is spent.
Bisection rather than golden-section: we look for a crossing (a root of u(α) − threshold), not an
extremum, and bisection halves the bracket per evaluation. Every evaluation is recorded, and the
answer is the largest *evaluated* α that satisfied the rule (so it is never an untested value).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class AutoAlphaResult:
    alpha: float
    base_utility: float
    threshold: float
    evaluations: list[tuple[float, float]] = field(default_factory=list)  # (alpha, utility) in order
    stopped: str = ""

    def to_json(self) -> dict:
        return {"alpha": self.alpha, "base_utility": self.base_utility, "threshold": self.threshold,
                "evaluations": [{"alpha": a, "utility": u} for a, u in self.evaluations], "stopped": self.stopped}


def auto_alpha(utility_fn: Callable[[float], float], tolerance: float = 0.05, alpha_start: float = 0.25,
               alpha_max: float = 8.0, resolution: float = 0.05, max_evals: int = 12) -> AutoAlphaResult:
    """Largest α whose utility stays within `tolerance` (relative) of α = 0; see the module docstring."""
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance={tolerance}: must be in (0, 1) (a relative utility drop)")
    if not 0 < alpha_start <= alpha_max:
        raise ValueError(f"alpha_start={alpha_start}, alpha_max={alpha_max}: need 0 < alpha_start <= alpha_max")
    if max_evals < 2:
        raise ValueError(f"max_evals={max_evals}: need at least 2 evaluations (α = 0 and one more)")
    evals: list[tuple[float, float]] = []

    def ev(a: float) -> float:
        u = float(utility_fn(a))
        evals.append((a, u))
        return u

    base = ev(0.0)
    threshold = (1 - tolerance) * base
    good, bad = 0.0, None
    a = alpha_start
    while len(evals) < max_evals:
        if ev(a) >= threshold:
            good = a
            if a >= alpha_max:
                return AutoAlphaResult(good, base, threshold, evals, "alpha_max reached within tolerance")
            a = min(2 * a, alpha_max)
        else:
            bad = a
            break
    if bad is None:
        return AutoAlphaResult(good, base, threshold, evals, "evaluation budget spent while bracketing")
    while len(evals) < max_evals and bad - good > resolution:
        mid = (good + bad) / 2
        if ev(mid) >= threshold:
            good = mid
        else:
            bad = mid
    stopped = "bracket narrower than resolution" if bad - good <= resolution else "evaluation budget spent"
    return AutoAlphaResult(good, base, threshold, evals, stopped)
