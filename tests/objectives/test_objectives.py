"""Each objective's loss on a fixed batch of the tiny model, against an independent per-token computation.

The independent path: one *unpadded* forward per sample through plain `model(input_ids=...)`, then a
Python loop over positions in float64 — no padding, no `sequence_logprobs`, no masks, no shift helper.
The objective sees the same samples right-padded into one batch.
"""
import copy
import math

import pytest
import torch

from unlearnkit.objectives import FrozenModelReference, UnlearnBatch, build_objective


def log_sigmoid(x):
    return -math.log1p(math.exp(-x))


def sample_outputs(model, ds, i, hidden=False):
    item = ds[i]
    ids = torch.tensor([item["input_ids"]])
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=hidden)
    return item, out


def token_logprobs(model, ds, i):
    """[log p(y_t | y_<t)] over the answer tokens of sample i."""
    item, out = sample_outputs(model, ds, i)
    logp = torch.log_softmax(out.logits[0].double(), -1)
    return [logp[t - 1, item["input_ids"][t]].item() for t in range(1, len(item["input_ids"]))
            if item["labels"][t] != -100]


def all_tokens(model, ds):
    return [token_logprobs(model, ds, i) for i in range(len(ds))]


def flat(rows):
    return [v for r in rows for v in r]


def value(name, model, batch, ref=None, **cfg):
    loss, logs = build_objective(name, cfg).loss(model, batch, ref)
    assert logs["loss"] == pytest.approx(loss.item())
    return loss.item(), logs


# ------------------------------------------------------------------------------------------------------
def test_ga_and_grad_diff(tiny_model, datasets, batch):
    f = all_tokens(tiny_model, datasets["forget"])
    r = all_tokens(tiny_model, datasets["retain"])
    ga_tok = sum(flat(f)) / len(flat(f))
    ga_seq = sum(sum(x) for x in f) / len(f)
    assert value("ga", tiny_model, batch)[0] == pytest.approx(ga_tok, rel=1e-5)
    assert value("ga", tiny_model, batch, reduction="sequence_sum")[0] == pytest.approx(ga_seq, rel=1e-5)
    nll_r = -sum(flat(r)) / len(flat(r))
    got, logs = value("grad_diff", tiny_model, batch, forget_weight=2.0, retain_weight=0.5)
    assert got == pytest.approx(2.0 * ga_tok + 0.5 * nll_r, rel=1e-5)
    assert logs["forget_loss"] == pytest.approx(ga_tok, rel=1e-5)
    assert logs["retain_loss"] == pytest.approx(nll_r, rel=1e-5)
    # any objective composes with the nll retain term the same way
    got, _ = value("npo", tiny_model, batch, FrozenModelReference(copy.deepcopy(tiny_model)), retain="nll",
                   retain_weight=0.5)
    assert got == pytest.approx(2 / 0.1 * math.log(2) + 0.5 * nll_r, rel=1e-5)


def test_kl(tiny_model, ref_model, datasets, batch):
    total, n = 0.0, 0
    for i in range(len(datasets["retain"])):
        _, out = sample_outputs(tiny_model, datasets["retain"], i)
        _, ref_out = sample_outputs(ref_model, datasets["retain"], i)
        logp, ref_logp = torch.log_softmax(out.logits[0].double(), -1), torch.log_softmax(ref_out.logits[0].double(), -1)
        for t in range(logp.shape[0]):  # every (non-pad) position of the retain sequence
            total += (ref_logp[t].exp() * (ref_logp[t] - logp[t])).sum().item()
            n += 1
    f = flat(all_tokens(tiny_model, datasets["forget"]))
    got, logs = value("kl", tiny_model, batch, FrozenModelReference(ref_model), retain_weight=0.7)
    assert logs["retain_loss"] == pytest.approx(total / n, rel=1e-4)
    assert got == pytest.approx(sum(f) / len(f) + 0.7 * total / n, rel=1e-4)


def test_npo_and_simnpo(tiny_model, ref_model, datasets, batch):
    cur = [sum(x) for x in all_tokens(tiny_model, datasets["forget"])]
    ref = [sum(x) for x in all_tokens(ref_model, datasets["forget"])]
    beta = 0.3
    want = sum((2 / beta) * math.log1p(math.exp(beta * (a - b))) for a, b in zip(cur, ref)) / len(cur)
    got, logs = value("npo", tiny_model, batch, FrozenModelReference(ref_model), beta=beta)
    assert got == pytest.approx(want, rel=1e-5)
    assert logs["npo_weight"] == pytest.approx(
        sum(2 * math.exp(beta * a) / (math.exp(beta * a) + math.exp(beta * b)) for a, b in zip(cur, ref)) / 3, rel=1e-5)

    rows = all_tokens(tiny_model, datasets["forget"])
    beta, delta = 2.0, 0.3
    want = sum(-(2 / beta) * log_sigmoid(-(beta / len(r)) * sum(r) - beta * delta) for r in rows) / len(rows)
    assert value("simnpo", tiny_model, batch, beta=beta, delta=delta)[0] == pytest.approx(want, rel=1e-5)


def test_idk_nll_and_dpo(tiny_model, ref_model, datasets, batch):
    idk = all_tokens(tiny_model, datasets["idk"])
    assert value("idk_nll", tiny_model, batch)[0] == pytest.approx(-sum(flat(idk)) / len(flat(idk)), rel=1e-5)

    idk_ref = all_tokens(ref_model, datasets["idk"])
    f, f_ref = all_tokens(tiny_model, datasets["forget"]), all_tokens(ref_model, datasets["forget"])
    beta = 0.1
    want = 0.0
    for i in range(3):
        chosen = sum(idk[i]) - sum(idk_ref[i])
        rejected = sum(f[i]) - sum(f_ref[i])
        want += -(2 / beta) * log_sigmoid(beta * (chosen - rejected)) / 3
    assert value("idk_dpo", tiny_model, batch, FrozenModelReference(ref_model))[0] == pytest.approx(want, rel=1e-5)


def test_idk_dpo_refuses_unpaired_rows(tiny_model, ref_model, datasets, collate_fn, batch):
    short = UnlearnBatch(forget=batch.forget, idk=collate_fn(datasets["idk"], order=[0, 1]))
    with pytest.raises(ValueError, match="pairs batch.idk"):
        build_objective("idk_dpo").loss(tiny_model, short, FrozenModelReference(ref_model))


@pytest.mark.parametrize("name,cfg", [("wga", {"beta": 2.0}), ("tnpo", {}), ("wtnpo", {}), ("tnpo", {"eps": 0.0})])
def test_token_weighted(tiny_model, ref_model, datasets, batch, name, cfg):
    # tiny random model: p ≈ 1/1000, so use a sharper reference stand-in: same model (p = p_ref)
    # and the different random model, to cover both regimes of the TNPO weight
    cur = flat(all_tokens(tiny_model, datasets["forget"]))
    ref = flat(all_tokens(ref_model, datasets["forget"]))
    obj = build_objective(name, cfg)
    c = obj.config
    if name == "wga":
        w = [math.exp(c.beta * lp) for lp in cur]
    else:
        w = [2 * math.exp((c.beta + c.alpha) * lp) / (math.exp(c.beta * lp) + math.exp(c.beta * lr) + c.eps)
             for lp, lr in zip(cur, ref)]
    want = sum(wi * lp for wi, lp in zip(w, cur)) / len(cur)
    got = obj.loss(tiny_model, batch, FrozenModelReference(ref_model))[0].item()
    assert got == pytest.approx(want, rel=1e-4, abs=1e-12)


@pytest.mark.parametrize("name,cfg", [("wga", {"beta": 1.0}), ("tnpo", {"eps": 0.0}), ("wtnpo", {"eps": 0.0})])
def test_token_weights_are_detached(theta_ini, ref_model, datasets, batch, name, cfg):
    """∇ of the objective = ∇ Σ w_i log p_i / N with w_i fixed numbers (no term from differentiating w)."""
    obj = build_objective(name, cfg)
    c = obj.config
    ref = flat(all_tokens(ref_model, datasets["forget"]))
    cur = flat(all_tokens(theta_ini, datasets["forget"]))
    if name == "wga":
        w = [math.exp(c.beta * lp) for lp in cur]
    else:
        w = [2 * math.exp((c.beta + c.alpha) * lp) / (math.exp(c.beta * lp) + math.exp(c.beta * lr))
             for lp, lr in zip(cur, ref)]
    # surrogate through plain per-sample forwards, weights as constants
    surrogate, k = 0.0, 0
    ds = datasets["forget"]
    for i in range(len(ds)):
        item = ds[i]
        logp = torch.log_softmax(theta_ini(input_ids=torch.tensor([item["input_ids"]])).logits[0], -1)
        for t in range(1, len(item["input_ids"])):
            if item["labels"][t] != -100:
                surrogate = surrogate + w[k] * logp[t - 1, item["input_ids"][t]]
                k += 1
    (surrogate / k).backward()
    want = theta_ini.lm_head.weight.grad.clone()
    theta_ini.zero_grad()
    obj.loss(theta_ini, batch, FrozenModelReference(ref_model))[0].backward()
    got = theta_ini.lm_head.weight.grad
    assert torch.allclose(got, want, rtol=1e-3, atol=1e-7)


def hooked_block_output(model, ids, layer):
    """The output of model.model.layers[layer] from a forward hook, as WMDP's `forward_with_cache` reads it."""
    seen = []
    handle = model.model.layers[layer].register_forward_hook(
        lambda _m, _a, out: seen.append(out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    return seen[0]


def test_rmu(tiny_model, ref_model, datasets, batch):
    layer, coeff = 1, 3.0  # the tiny model's last block: its output is not in outputs.hidden_states at all
    obj = build_objective("rmu", {"layer": layer, "steering_coeff": coeff, "retain_weight": 0.5, "seed": 3})
    gen = torch.Generator().manual_seed(3)
    u = torch.rand(64, generator=gen).double()
    target = coeff * u / u.norm()

    def mse_rows(ds, other=None):
        per_seq = []
        for i in range(len(ds)):
            item = ds[i]
            ids = torch.tensor([item["input_ids"]])
            h = hooked_block_output(tiny_model, ids, layer)[0].double()
            tgt = None if other is None else hooked_block_output(other, ids, layer)[0].double()
            vals = [((h[t - 1] - (target if tgt is None else tgt[t - 1])) ** 2).mean().item()
                    for t in range(1, len(item["input_ids"])) if item["labels"][t] != -100]
            per_seq.append(sum(vals) / len(vals))
        return sum(per_seq) / len(per_seq)

    forget, retain = mse_rows(datasets["forget"]), mse_rows(datasets["retain"], ref_model)
    loss, logs = obj.loss(tiny_model, batch, FrozenModelReference(ref_model))
    assert logs["forget_loss"] == pytest.approx(forget, rel=1e-4)
    assert logs["retain_loss"] == pytest.approx(retain, rel=1e-4)
    assert loss.item() == pytest.approx(forget + 0.5 * retain, rel=1e-4)
    with pytest.raises(ValueError, match=r"layer=2: the model has 2 decoder layers, so layer must be in 0\.\.1"):
        build_objective("rmu", {"layer": 2}).loss(tiny_model, batch, FrozenModelReference(ref_model))


def test_undial(tiny_model, ref_model, datasets, batch):
    beta = 2.0
    total, n = 0.0, 0
    ds = datasets["forget"]
    for i in range(len(ds)):
        item, out = sample_outputs(tiny_model, ds, i)
        _, ref_out = sample_outputs(ref_model, ds, i)
        logp = torch.log_softmax(out.logits[0].double(), -1)
        for t in range(1, len(item["input_ids"])):
            if item["labels"][t] == -100:
                continue
            z = ref_out.logits[0, t - 1].double().clone()
            z[item["input_ids"][t]] -= beta
            total += -(torch.softmax(z, -1) * logp[t - 1]).sum().item()
            n += 1
    got = value("undial", tiny_model, batch, FrozenModelReference(ref_model), beta=beta)[0]
    assert got == pytest.approx(total / n, rel=1e-5)


def test_same_loss_left_and_right_padded(tiny_model, ref_model, batch, left_batch):
    ref = FrozenModelReference(ref_model)
    cfgs = {"rmu": {"layer": 1}}
    from unlearnkit.objectives import OBJECTIVES

    for name in OBJECTIVES.names():
        obj = build_objective(name, {**cfgs.get(name, {}), **({"retain": "kl"} if name == "ga" else {})})
        right = obj.loss(tiny_model, batch, ref)[0].item()
        left = obj.loss(tiny_model, left_batch, ref)[0].item()
        assert left == pytest.approx(right, rel=1e-4, abs=1e-6), name


# -- NPO → GA as β → 0 ---------------------------------------------------------------------------------
def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_npo_gradient_equals_ga_gradient_as_beta_to_zero(tiny_model, ref_model, batch):
    """L_NPO,β ≈ (2/β) log 2 + log π_θ − log π_ref, so ∇L_NPO = W·∇L_GA(sequence_sum) with
    W = 2σ(β(log π_θ − log π_ref)): exactly 1 when θ = θ_ref, 1 + O(β) otherwise."""
    beta = 1e-4
    ga = build_objective("ga", {"reduction": "sequence_sum"})
    g_ga = _grads(tiny_model, ga.loss(tiny_model, batch)[0])

    npo = build_objective("npo", {"beta": beta})
    same = FrozenModelReference(copy.deepcopy(tiny_model))
    loss, logs = npo.loss(tiny_model, batch, same)
    assert loss.item() == pytest.approx(2 / beta * math.log(2), rel=1e-6)
    assert logs["npo_weight"] == pytest.approx(1.0)
    g_npo = _grads(tiny_model, loss)
    assert torch.allclose(g_npo, g_ga, rtol=1e-4, atol=1e-6)

    g_other = _grads(tiny_model, npo.loss(tiny_model, batch, FrozenModelReference(ref_model))[0])
    assert torch.allclose(g_other, g_ga, rtol=5e-3, atol=1e-5)
    # at β = 1 and a different reference the weights are far from 1 and the gradients differ
    g_far = _grads(tiny_model, build_objective("npo", {"beta": 1.0}).loss(tiny_model, batch,
                                                                         FrozenModelReference(ref_model))[0])
    assert not torch.allclose(g_far, g_ga, rtol=5e-3, atol=1e-5)
