"""The pure loss functions on hand-made numbers, checked against formulas written out with `math`."""
import math

import pytest
import torch
import torch.nn.functional as F

from unlearnkit.objectives import (activation_mse, control_vector, dpo_loss, ga_loss, kl_to_reference, nll_loss,
                                   npo_loss, npo_weights, simnpo_loss, tnpo_weights, token_mean, undial_loss,
                                   weighted_logprob_loss, wga_weights)


def log_sigmoid(x):
    return -math.log1p(math.exp(-x))


# Two sequences: 3 and 2 answer tokens (0 where masked, as SequenceLogprobs stores them).
LP = torch.tensor([[-1.0, -2.0, -0.5], [-0.2, -3.0, 0.0]])
MASK = torch.tensor([[True, True, True], [True, True, False]])


def test_token_mean_and_ga():
    assert token_mean(LP, MASK).item() == pytest.approx((-1 - 2 - 0.5 - 0.2 - 3) / 5)
    assert ga_loss(LP, MASK).item() == pytest.approx(-6.7 / 5)
    assert ga_loss(LP, MASK, "sequence_sum").item() == pytest.approx((-3.5 + -3.2) / 2)
    assert nll_loss(LP, MASK).item() == pytest.approx(6.7 / 5)


def test_npo_loss_hand():
    logp, ref, beta = [-1.0, -3.0], [-2.0, -2.0], 0.5
    want = sum((2 / beta) * math.log1p(math.exp(beta * (a - b))) for a, b in zip(logp, ref)) / 2
    got = npo_loss(torch.tensor(logp), torch.tensor(ref), beta)
    assert got.item() == pytest.approx(want, rel=1e-6)
    # the same value written as −(2/β) log σ(−β·Δ)
    want2 = sum(-(2 / beta) * log_sigmoid(-beta * (a - b)) for a, b in zip(logp, ref)) / 2
    assert got.item() == pytest.approx(want2, rel=1e-6)
    w = npo_weights(torch.tensor(logp), torch.tensor(ref), beta)
    p, pr = math.exp(-1.0), math.exp(-2.0)
    assert w[0].item() == pytest.approx(2 * p ** beta / (p ** beta + pr ** beta), rel=1e-6)


def test_npo_small_beta_expansion():
    """(2/β) log(1 + r^β) = (2/β) log 2 + log r + O(β): the loss is GA's up to a constant."""
    logp, ref, beta = torch.tensor([-1.0, -3.0], dtype=torch.float64), torch.tensor([-2.0, -2.5], dtype=torch.float64), 1e-4
    expansion = 2 / beta * math.log(2) + (logp - ref).mean().item()
    assert npo_loss(logp, ref, beta).item() == pytest.approx(expansion, abs=1e-3)


def test_npo_gradient_is_weighted_ga():
    logp = torch.tensor([-1.0, -3.0], requires_grad=True)
    ref = torch.tensor([-2.0, -2.0])
    npo_loss(logp, ref, 0.5).backward()
    w = 2 * torch.sigmoid(0.5 * (logp.detach() - ref))
    assert torch.allclose(logp.grad, w / 2)  # dL/dlogp_i = W_i / B


def test_simnpo_hand():
    lp_mean, beta, delta = [-0.5, -2.0], 2.0, 0.5
    want = sum(-(2 / beta) * log_sigmoid(beta * (-m) - beta * delta) for m in lp_mean) / 2
    assert simnpo_loss(torch.tensor(lp_mean), beta, delta).item() == pytest.approx(want, rel=1e-6)
    # minimising it lowers the likelihood: d/d(logp_mean) > 0
    x = torch.tensor(lp_mean, requires_grad=True)
    simnpo_loss(x, beta, delta).backward()
    assert (x.grad > 0).all()


def test_dpo_hand():
    chosen, rejected, beta = [0.3, -0.1], [0.2, 0.5], 0.1
    want = sum(-(2 / beta) * log_sigmoid(beta * (c - r)) for c, r in zip(chosen, rejected)) / 2
    assert dpo_loss(torch.tensor(chosen), torch.tensor(rejected), beta).item() == pytest.approx(want, rel=1e-6)


def test_wga_weights_and_detached_gradient():
    lp = LP.clone().requires_grad_(True)
    w = wga_weights(lp, 2.0)
    assert not w.requires_grad
    assert w[0, 0].item() == pytest.approx(math.exp(-1.0) ** 2)
    loss = weighted_logprob_loss(lp, w, MASK)
    loss.backward()
    # gradient is w_i / N on answer tokens, 0 elsewhere: no term from differentiating w
    assert torch.allclose(lp.grad, torch.where(MASK, w / 5, torch.zeros_like(w)))
    want = sum(math.exp(2 * v) * v for v, m in zip(LP.flatten().tolist(), MASK.flatten().tolist()) if m) / 5
    assert loss.item() == pytest.approx(want, rel=1e-6)


def test_weights_detached_even_if_passed_with_grad():
    lp = LP.clone().requires_grad_(True)
    weighted_logprob_loss(lp, lp.exp(), MASK).backward()  # weights built with grad on purpose
    assert torch.allclose(lp.grad, torch.where(MASK, LP.exp() / 5, torch.zeros_like(LP)))


@pytest.mark.parametrize("eps", [1e-5, 0.0])
@pytest.mark.parametrize("alpha", [0.0, 1.5])
def test_tnpo_weights_hand(eps, alpha):
    lp, ref, beta = torch.tensor([[-0.1, -2.0, -4.0]]), torch.tensor([[-0.3, -1.0, -4.5]]), 4.0
    w = tnpo_weights(lp.requires_grad_(True), ref, beta, alpha, eps)
    assert not w.requires_grad
    for i in range(3):
        p, pr = math.exp(lp[0, i].item()), math.exp(ref[0, i].item())
        want = 2 * p ** (beta + alpha) / (p ** beta + pr ** beta + eps)
        assert w[0, i].item() == pytest.approx(want, rel=1e-5)


def test_tnpo_eps_matters_for_small_probabilities():
    """Both p^β tiny: the code's ε drives the weight to ~0, the paper's exact weight stays 2σ(βΔ)."""
    lp, ref = torch.tensor([-5.0]), torch.tensor([-5.0])
    assert tnpo_weights(lp, ref, 4.0, eps=1e-5).item() == pytest.approx(2 * math.exp(-20) / (2 * math.exp(-20) + 1e-5))
    assert tnpo_weights(lp, ref, 4.0, eps=0.0).item() == pytest.approx(1.0)


def test_kl_hand_and_reference_code():
    logits = torch.tensor([[[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]])
    ref_logits = torch.tensor([[[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]]])

    def kl_pos(z, zr):
        p = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
        q = [math.exp(v) / sum(math.exp(u) for u in zr) for v in zr]
        return sum(qi * (math.log(qi) - math.log(pi)) for pi, qi in zip(p, q))

    k0, k1 = kl_pos([1.0, 0.0, -1.0], [0.0, 1.0, 0.0]), kl_pos([0.5, 0.5, 0.0], [2.0, 0.0, 0.0])
    assert kl_to_reference(logits, ref_logits).item() == pytest.approx((k0 + k1) / 2, rel=1e-5)
    # mask=None is the G-effect / open-unlearning code: kl_div(batchmean, log_target) over flattened positions
    code = F.kl_div(F.log_softmax(logits, -1).view(-1, 3), F.log_softmax(ref_logits, -1).view(-1, 3),
                    reduction="batchmean", log_target=True)
    assert kl_to_reference(logits, ref_logits).item() == pytest.approx(code.item(), rel=1e-6)
    # our default masks padding out
    assert kl_to_reference(logits, ref_logits, torch.tensor([[1, 0]])).item() == pytest.approx(k0, rel=1e-5)
    assert kl_to_reference(ref_logits, ref_logits).item() == pytest.approx(0.0, abs=1e-7)


def test_activation_mse_and_control_vector():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])
    target = torch.tensor([1.0, 0.0])
    mask = torch.tensor([[True, True, False]])
    want = (((0 ** 2 + 2 ** 2) / 2) + ((2 ** 2 + 4 ** 2) / 2)) / 2
    assert activation_mse(hidden, target, mask).item() == pytest.approx(want)
    c = control_vector(16, 3.0, seed=5)
    assert c.norm().item() == pytest.approx(3.0, rel=1e-6)
    assert (c >= 0).all() and torch.equal(c, control_vector(16, 3.0, seed=5))
    assert not torch.equal(c, control_vector(16, 3.0, seed=6))


def test_undial_hand():
    # one sequence of 3 tokens: label at position 1 and 2 (position 0 is the prompt, -100)
    logits = torch.tensor([[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [5.0, 5.0, 5.0]]])
    ref_logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[-100, 0, 2]])
    beta = 1.5

    def ce(z_student, z_teacher, label):
        zt = list(z_teacher)
        zt[label] -= beta
        q = [math.exp(v) / sum(math.exp(u) for u in zt) for v in zt]
        ls = [v - math.log(sum(math.exp(u) for u in z_student)) for v in z_student]
        return -sum(qi * li for qi, li in zip(q, ls))

    want = (ce([0.0, 1.0, 0.0], [2.0, 0.0, 0.0], 0) + ce([1.0, 0.0, 0.0], [0.0, 0.0, 3.0], 2)) / 2
    assert undial_loss(logits, ref_logits, labels, beta).item() == pytest.approx(want, rel=1e-6)
