"""NeuralUCB against the baselines on a synthetic contextual bandit with a non-linear reward."""
import pytest
import torch

from unlearnkit.reveal.bandits import EpsilonGreedy, RandomPolicy
from unlearnkit.reveal.neural_ucb import NeuralUCB, NeuralUCBConfig

K, D, T, NOISE, SEEDS = 20, 8, 300, 0.3, (0, 1, 2)


@pytest.fixture(autouse=True)
def _one_thread():
    """The networks here have a few hundred parameters: a second intra-op thread only adds contention
    (about 20x slower on a loaded 2-core machine) and makes float reductions depend on the thread count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _problem(seed):
    """K fixed unit-norm contexts in R^8; mean reward cos(3·aᵀx) for a hidden unit vector a; noise N(0, 0.3²)."""
    g = torch.Generator().manual_seed(1000 + seed)
    x = torch.randn(K, D, generator=g)
    x = x / x.norm(dim=1, keepdim=True)
    a = torch.randn(D, generator=g)
    return x, torch.cos(3 * x @ (a / a.norm())), g


def _regret(policy, seed):
    x, mean, g = _problem(seed)
    regret = 0.0
    for _ in range(T):
        k = policy.select(x)
        policy.update(x[k], float(mean[k] + NOISE * torch.randn((), generator=g)), arm=k)
        regret += float(mean.max() - mean[k])
    return regret


def test_neural_ucb_beats_random_and_epsilon_greedy():
    regret = {
        "random": sum(_regret(RandomPolicy(seed=s), s) for s in SEEDS) / len(SEEDS),
        "eps_greedy": sum(_regret(EpsilonGreedy(0.1, seed=s), s) for s in SEEDS) / len(SEEDS),
        "neural_ucb": sum(_regret(NeuralUCB(D, seed=s), s) for s in SEEDS) / len(SEEDS),  # documented defaults
    }
    print("mean cumulative regret over seeds", SEEDS, {k: round(v, 1) for k, v in regret.items()})
    assert regret["neural_ucb"] < regret["eps_greedy"] < regret["random"]


@pytest.mark.parametrize("depth", [2, 3])
def test_per_sample_gradients_match_autograd(depth):
    p = NeuralUCB(5, hidden=7, depth=depth, seed=1)
    x = torch.randn(4, 5)
    f, g = p.predict_and_grad(x)
    ref = []
    for row in p._prep(x):
        p.net.zero_grad()
        p.net(row[None]).squeeze().backward()
        ref.append(torch.cat([q.grad.flatten() for q in p.net.parameters()]))
    torch.testing.assert_close(g, torch.stack(ref))
    torch.testing.assert_close(f, p.net(p._prep(x)).squeeze(-1).detach())
    assert g.shape == (4, p.n_params)


def test_full_covariance_matches_exact_inverse_and_bonus_shrinks():
    p = NeuralUCB(3, hidden=4, covariance="full", lam=0.5, train_steps=0, seed=0)
    assert p.full
    x = torch.randn(6, 3)
    _, bonus0 = p.ucb(x)
    z = 0.5 * torch.eye(p.n_params)
    for i in range(6):
        _, g = p.predict_and_grad(x[i:i + 1])
        z += g[0][:, None] * g[0][None, :]
        p.update(x[i], 1.0)
    torch.testing.assert_close(p.z_inv, torch.linalg.inv(z), atol=1e-4, rtol=1e-3)
    _, bonus1 = p.ucb(x)
    assert (bonus1 < bonus0).all()
    d = NeuralUCB(3, hidden=4, train_steps=0)
    for i in range(6):
        d.update(x[i], 1.0)
    torch.testing.assert_close(d.z_diag, 1.0 + torch.stack([d.predict_and_grad(x[i:i + 1])[1][0] ** 2
                                                              for i in range(6)]).sum(0))


def test_training_fits_rewards_and_global_rng_untouched():
    state = torch.random.get_rng_state()
    p = NeuralUCB(4, seed=0, train_every=1000, train_steps=200, lr=1e-2)
    assert torch.equal(torch.random.get_rng_state(), state)
    x = torch.randn(8, 4)
    r = torch.linspace(-1, 1, 8)
    for i in range(8):
        p.update(x[i], float(r[i]))
    before = float(((p.predict_and_grad(x)[0] - r) ** 2).mean())
    p.train()
    after = float(((p.predict_and_grad(x)[0] - r) ** 2).mean())
    assert after < 0.05 < before


def test_baselines_and_errors():
    x = torch.randn(5, 3)
    eps = EpsilonGreedy(epsilon=0.0)
    pulls = []
    for r in [0.1, 0.9, 0.2, 0.3, 0.4]:       # every arm once, in order (unpulled arms are +inf)
        pulls.append(eps.select(x))
        eps.update(x[pulls[-1]], r)
    assert pulls == [0, 1, 2, 3, 4] and eps.select(x) == 1
    rnd = RandomPolicy(seed=0)
    assert len({rnd.select(x) for _ in range(50)}) == 5
    with pytest.raises(ValueError, match="needs arm="):
        EpsilonGreedy().update(x[0], 1.0)
    with pytest.raises(ValueError, match="context dimension 3"):
        NeuralUCB(4).select(x)
    with pytest.raises(ValueError, match="shape \\[K, d\\]"):
        NeuralUCB(3).select(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="covariance='exact'"):
        NeuralUCBConfig(covariance="exact")
    with pytest.raises(ValueError, match="lam=0"):
        NeuralUCBConfig(lam=0)


def test_explore_first_pulls_at_random_then_uses_ucb():
    x = torch.randn(6, 4)
    ucb, rnd = NeuralUCB(4, seed=3, explore_first=5), RandomPolicy(seed=3)
    allowed = [True, False, True, True, False, True]
    for i in range(5):        # the same draws as a random policy with the same seed, within the allowed arms
        k = ucb.select(x, allowed=allowed)
        assert k == rnd.select(x, allowed=allowed) and allowed[k]
        ucb.update(x[k], float(i))
    f, bonus = ucb.ucb(x)
    assert ucb.select(x) == int(torch.argmax(f + bonus))   # from then on: UCB
    with pytest.raises(ValueError, match="explore_first"):
        NeuralUCBConfig(explore_first=-1)

