"""NeuralUCB (Zhou, Li, Gu, "Neural Contextual Bandits with UCB-based Exploration", ICML 2020, arXiv 1911.04462).

An MLP f(x; θ) of width m predicts the reward of an arm from its context x. Each arm gets the score

    U(x) = f(x; θ) + ν · sqrt( g(x)ᵀ Z⁻¹ g(x) ),     g(x) = ∇_θ f(x; θ) (flattened, p entries),

and the arm with the largest U is pulled (ties broken at random). After observing reward r for x:

    Z ← Z + g(x) g(x)ᵀ,      Z₀ = λ I,

and every `train_every` updates θ takes `train_steps` Adam steps on
    L(θ) = mean_i (f(x_i; θ) − r_i)² + reg · ‖θ − θ₀‖²
over the last `batch_size` observations.

Differences from the paper's Algorithm 1, on purpose (all as in the authors' released `NeuralUCBDiag`
code or cheaper): the paper uses the NTK parametrisation, in which ‖g‖² grows like m, and so divides
by m in both the Z update and the bonus (ν·sqrt(gᵀZ⁻¹g/m), Z += ggᵀ/m); with PyTorch's default
parametrisation ‖g‖² is O(1), so we drop both 1/m factors (equivalent to rescaling λ and ν). The paper's
regulariser mλ‖θ−θ₀‖²/2 becomes a separate small weight `reg`, and θ is warm-started from its last value
instead of being re-trained from θ₀. Z is diagonal by default (the released code's choice: O(p) memory);
`covariance='full'` keeps the exact Z⁻¹ with Sherman–Morrison updates, affordable when p is a few
thousand at most ('auto' picks it below `max_full_params`).

Contexts are L2-normalised by default (the paper assumes ‖x‖ = 1), which also makes LM embeddings of
different scales usable as is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .bandits import BanditPolicy, as_contexts, best_allowed


@dataclass
class NeuralUCBConfig:
    hidden: int = field(default=32, metadata={"help": "width m of the MLP's hidden layers"})
    depth: int = field(default=2, metadata={"help": "number of linear layers (>= 2)"})
    lam: float = field(default=1.0, metadata={"help": "λ: prior precision, Z₀ = λI (smaller explores more)"})
    nu: float = field(default=1.0, metadata={"help": "ν: scale of the exploration bonus ν·sqrt(gᵀZ⁻¹g)"})
    train_every: int = field(default=10, metadata={"help": "retrain the MLP every k updates"})
    train_steps: int = field(default=20, metadata={"help": "Adam steps per retraining"})
    lr: float = field(default=2e-2, metadata={"help": "Adam learning rate"})
    reg: float = field(default=1e-3, metadata={"help": "weight of ‖θ−θ₀‖² in the training loss"})
    batch_size: int = field(default=256, metadata={"help": "observations per step (most recent ones if more)"})
    covariance: str = field(default="diagonal", metadata={"help": "'diagonal', 'full' or 'auto'"})
    max_full_params: int = field(default=4096, metadata={"help": "'auto' uses 'full' up to this many parameters"})
    normalize_contexts: bool = field(default=True, metadata={"help": "L2-normalise each context"})
    explore_first: int = field(default=0, metadata={"help": "pull this many uniformly random (allowed) arms before "
                                                           "the first UCB choice: an untrained MLP's f(x) is an "
                                                           "arbitrary preference, not an estimate"})
    seed: int = field(default=0, metadata={"help": "seeds the MLP initialisation and tie breaking"})

    def __post_init__(self):
        if self.covariance not in ("diagonal", "full", "auto"):
            raise ValueError(f"covariance={self.covariance!r} must be 'diagonal', 'full' or 'auto'")
        if self.explore_first < 0:
            raise ValueError(f"explore_first={self.explore_first} must be >= 0")
        for name in ("hidden", "train_every", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.depth < 2:
            raise ValueError(f"depth={self.depth} must be >= 2 (one hidden layer at least)")
        if self.train_steps < 0:
            raise ValueError(f"train_steps={self.train_steps} must be >= 0")
        if self.lam <= 0:
            raise ValueError(f"lam={self.lam} must be > 0 (Z₀ = λI must be invertible)")
        if self.nu < 0:
            raise ValueError(f"nu={self.nu} must be >= 0")


def _mlp(dim: int, hidden: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(dim, hidden), nn.ReLU()]
    for _ in range(depth - 2):
        layers += [nn.Linear(hidden, hidden), nn.ReLU()]
    layers.append(nn.Linear(hidden, 1))
    return nn.Sequential(*layers)


class NeuralUCB(BanditPolicy):
    """NeuralUCB over context vectors of dimension `dim` (see the module docstring for the equations)."""

    def __init__(self, dim: int, config: NeuralUCBConfig | None = None, **overrides):
        cfg = config or NeuralUCBConfig(**overrides)
        if config is not None and overrides:
            raise ValueError("pass either config=NeuralUCBConfig(...) or keyword overrides, not both")
        if dim < 1:
            raise ValueError(f"dim={dim} must be >= 1")
        super().__init__(cfg.seed)
        self.cfg, self.dim = cfg, dim
        with torch.random.fork_rng(devices=[]):  # nn.Linear init draws from the global generator; leave it as is
            torch.manual_seed(cfg.seed)
            self.net = _mlp(dim, cfg.hidden, cfg.depth)
        self.params = {k: v.detach() for k, v in self.net.named_parameters()}  # views: see in-place updates
        self.theta0 = {k: v.clone() for k, v in self.params.items()}
        self.n_params = sum(v.numel() for v in self.params.values())
        self.full = cfg.covariance == "full" or (cfg.covariance == "auto" and self.n_params <= cfg.max_full_params)
        if self.full:
            self.z_inv = torch.eye(self.n_params) / cfg.lam            # Z⁻¹, [p, p]
        else:
            self.z_diag = torch.full((self.n_params,), cfg.lam)         # diag(Z), [p]
        self.xs: list[torch.Tensor] = []
        self.rs: list[float] = []

    # f and g for a batch of contexts --------------------------------------------------------------
    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"context dimension {x.shape[-1]} does not match NeuralUCB dim={self.dim}")
        if self.cfg.normalize_contexts:
            x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return x

    def predict_and_grad(self, contexts) -> tuple[torch.Tensor, torch.Tensor]:
        """f(x) [K] and the flattened per-context gradient ∇_θ f(x) [K, p] for each row of `contexts`.

        Backpropagation written out for the Linear/ReLU stack (per-sample gradients as outer products),
        which is several times faster than `torch.func.vmap(grad(...))` at these sizes; the parameter
        order is `self.net.named_parameters()` (checked against autograd in the tests).
        """
        x = self._prep(as_contexts(contexts))
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        acts, a = [], x
        for i, lin in enumerate(linears):                      # forward, keeping each layer's input
            acts.append(a)
            w, b = self.params[f"{2 * i}.weight"], self.params[f"{2 * i}.bias"]
            a = a @ w.T + b
            if i < len(linears) - 1:
                a = torch.relu(a)
        f = a.squeeze(-1)                                      # [K]
        delta = torch.ones(x.shape[0], 1)                      # ∂f/∂(output of the last layer), [K, 1]
        pieces: list[torch.Tensor] = []
        for i in range(len(linears) - 1, -1, -1):              # backward
            inp = acts[i]                                      # [K, in]
            pieces.append(delta)                                                         # bias grad [K, out]
            pieces.append((delta.unsqueeze(2) * inp.unsqueeze(1)).flatten(1))            # weight grad [K, out*in]
            if i > 0:
                delta = (delta @ self.params[f"{2 * i}.weight"]) * (inp > 0).to(inp.dtype)  # relu'(z) from its output
        return f, torch.cat(pieces[::-1], dim=1)

    def ucb(self, contexts) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean prediction f(x) [K] and exploration bonus ν·sqrt(gᵀZ⁻¹g) [K]."""
        f, g = self.predict_and_grad(contexts)
        if self.full:
            quad = ((g @ self.z_inv) * g).sum(1)
        else:
            quad = (g * g / self.z_diag).sum(1)
        return f, self.cfg.nu * torch.sqrt(quad.clamp_min(0.0))

    def select(self, contexts, allowed=None) -> int:
        if self.t < self.cfg.explore_first:
            self.last_arm = self._random_allowed(len(as_contexts(contexts)), allowed)
            return self.last_arm
        f, bonus = self.ucb(contexts)
        self.last_arm = best_allowed(f + bonus, allowed, self.generator)
        return self.last_arm

    def update(self, context, reward: float, arm: int | None = None) -> None:
        x = torch.as_tensor(context, dtype=torch.float32).reshape(1, -1)
        _, g = self.predict_and_grad(x)
        g = g[0]
        if self.full:  # Sherman–Morrison: (Z + ggᵀ)⁻¹ = Z⁻¹ − Z⁻¹g gᵀZ⁻¹ / (1 + gᵀZ⁻¹g)
            zg = self.z_inv @ g
            self.z_inv -= torch.outer(zg, zg) / (1.0 + g @ zg)
        else:
            self.z_diag += g * g
        self.xs.append(self._prep(x[0]))
        self.rs.append(float(reward))
        super().update(context, reward, arm)
        if self.t % self.cfg.train_every == 0:
            self.train()

    def train(self) -> float:
        """`train_steps` Adam steps (fresh moments each call) on the last `batch_size` observations; returns
        the last loss. Adam is written out (eight lines) because `torch.optim` pulls in torch._dynamo on
        first use, which costs seconds on a loaded CPU for a network of a few hundred parameters."""
        if not self.xs or self.cfg.train_steps == 0:
            return float("nan")
        x = torch.stack(self.xs[-self.cfg.batch_size:])        # [n, d]
        r = torch.tensor(self.rs[-self.cfg.batch_size:])        # [n]
        params = list(self.net.parameters())
        theta0 = [self.theta0[k] for k, _ in self.net.named_parameters()]
        m1 = [torch.zeros_like(p) for p in params]
        m2 = [torch.zeros_like(p) for p in params]
        b1, b2, eps, lr = 0.9, 0.999, 1e-8, self.cfg.lr
        loss = torch.tensor(float("nan"))
        for step in range(1, self.cfg.train_steps + 1):
            pred = self.net(x).squeeze(-1)
            loss = ((pred - r) ** 2).mean() + self.cfg.reg * sum(((p - p0) ** 2).sum() for p, p0 in zip(params, theta0))
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g, a, v in zip(params, grads, m1, m2):
                    a.mul_(b1).add_(g, alpha=1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    p.addcdiv_(a / (1 - b1 ** step), (v / (1 - b2 ** step)).sqrt_().add_(eps), value=-lr)
        return float(loss.detach())
