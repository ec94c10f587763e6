"""Bandit policies over a fixed set of arms (instructions) with context vectors.

Every policy has the same two calls:
    arm = policy.select(contexts, allowed=None)  # contexts: [K, d] float tensor, one row per arm;
                                                 # allowed: optional K booleans, arms that may be chosen
    policy.update(context, reward, arm=arm) # context: [d]; reward: float (Reveal-and-Release: in [0, 1])
`arm` defaults to the arm of the last `select`. Context-based policies (NeuralUCB) use `context`;
per-arm policies (epsilon-greedy) use `arm`. `neural_ucb.NeuralUCB` is the method; `RandomPolicy` and
`EpsilonGreedy` are the baselines it must beat.
"""
from __future__ import annotations

import torch


def as_contexts(contexts) -> torch.Tensor:
    """[K, d] float32 tensor, K >= 1; a clear error otherwise."""
    x = torch.as_tensor(contexts, dtype=torch.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"contexts must have shape [K, d] with K >= 1 arms, got {tuple(x.shape)}")
    return x


class BanditPolicy:
    """Base class: remembers the last selected arm, checks `update` arguments."""

    def __init__(self, seed: int = 0):
        self.generator = torch.Generator().manual_seed(seed)
        self.last_arm: int | None = None
        self.t = 0  # number of updates so far

    def select(self, contexts, allowed=None) -> int:
        raise NotImplementedError

    def update(self, context, reward: float, arm: int | None = None) -> None:
        self.t += 1

    def _arm(self, arm: int | None) -> int:
        arm = self.last_arm if arm is None else arm
        if arm is None:
            raise ValueError(f"{type(self).__name__}.update needs arm=... (no select() was called before)")
        return int(arm)

    def _randint(self, k: int) -> int:
        return int(torch.randint(k, (1,), generator=self.generator))

    def _random_allowed(self, k: int, allowed) -> int:
        arms = allowed_arms(k, allowed)
        return int(arms[self._randint(len(arms))])


def allowed_arms(k: int, allowed) -> torch.Tensor:
    """Indices of the arms that may be chosen (all K when `allowed` is None); an error when none may."""
    if allowed is None:
        return torch.arange(k)
    mask = torch.as_tensor(allowed, dtype=torch.bool)
    if mask.shape != (k,):
        raise ValueError(f"allowed has shape {tuple(mask.shape)}, expected ({k},) — one flag per arm")
    arms = torch.nonzero(mask).flatten()
    if len(arms) == 0:
        raise ValueError("allowed excludes every arm")
    return arms


def best_allowed(values: torch.Tensor, allowed, generator: torch.Generator) -> int:
    """Arg-max of `values` over the allowed arms, ties broken at random with `generator`."""
    arms = allowed_arms(len(values), allowed)
    v = values[arms]
    best = arms[torch.nonzero(v == v.max()).flatten()]
    return int(best[int(torch.randint(len(best), (1,), generator=generator))]) if len(best) > 1 else int(best[0])


class RandomPolicy(BanditPolicy):
    """Uniformly random arm every round."""

    def select(self, contexts, allowed=None) -> int:
        self.last_arm = self._random_allowed(as_contexts(contexts).shape[0], allowed)
        return self.last_arm


class EpsilonGreedy(BanditPolicy):
    """Per-arm empirical means; with probability ε a uniformly random arm, else the best mean.

    Arms never pulled count as +∞ (each arm is tried once first, lowest index first); ties go to the
    lowest index. Contexts are ignored: nothing is shared between arms.
    """

    def __init__(self, epsilon: float = 0.1, seed: int = 0):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon={epsilon} must be in [0, 1]")
        super().__init__(seed)
        self.epsilon = epsilon
        self.sums: dict[int, float] = {}
        self.counts: dict[int, int] = {}

    def means(self, k: int) -> torch.Tensor:
        return torch.tensor([self.sums[a] / self.counts[a] if self.counts.get(a) else float("inf")
                             for a in range(k)])

    def select(self, contexts, allowed=None) -> int:
        k = as_contexts(contexts).shape[0]
        if float(torch.rand((), generator=self.generator)) < self.epsilon:
            self.last_arm = self._random_allowed(k, allowed)
        else:
            arms = allowed_arms(k, allowed)
            self.last_arm = int(arms[int(torch.argmax(self.means(k)[arms]))])  # ties: lowest index
        return self.last_arm

    def update(self, context, reward: float, arm: int | None = None) -> None:
        a = self._arm(arm)
        self.sums[a] = self.sums.get(a, 0.0) + float(reward)
        self.counts[a] = self.counts.get(a, 0) + 1
        super().update(context, reward, arm)
