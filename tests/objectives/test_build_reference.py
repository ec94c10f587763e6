"""The one reference policy: objectives declare what they ask the reference for, `build_reference` serves it
(tables, a frozen θ_ini, disabled adapters or a copy), and the model being trained is never its own reference."""
from __future__ import annotations

import copy

import pytest
import torch

from unlearnkit.logprobs import model_forward, sequence_logprobs
from unlearnkit.models.lora import LoraSettings, apply_lora
from unlearnkit.objectives import OBJECTIVES, CachedReference, build_objective
from unlearnkit.objectives.reference import block_output, build_reference, cached_splits, reference_tables


class _Recording:
    """A θ_ini-backed provider that notes every quantity asked of it."""

    def __init__(self, model):
        self.model, self.calls = model, set()

    def _run(self, name, fn):
        self.calls.add(name)
        with torch.no_grad():
            return fn()

    def forget_logprobs(self, b):
        return self._run("forget_logprobs", lambda: sequence_logprobs(self.model, b))

    def idk_logprobs(self, b):
        return self._run("idk_logprobs", lambda: sequence_logprobs(self.model, b))

    def forget_logits(self, b):
        return self._run("forget_logits", lambda: model_forward(self.model, b).logits)

    def retain_logits(self, b):
        return self._run("retain_logits", lambda: model_forward(self.model, b).logits)

    def hidden_states(self, b, layer):
        return self._run("hidden_states", lambda: block_output(self.model, b, layer))


VARIANTS = [(n, {"layer": 1} if n == "rmu" else {}) for n in OBJECTIVES.names()] + [
    ("npo", {"retain": "kl"}), ("rmu", {"retain": "none", "layer": 1}),
                                                     ("ga", {"retain": "kl"}), ("undial", {"retain": "nll"})]


@pytest.mark.parametrize("name,params", VARIANTS, ids=[f"{n}-{p}" for n, p in VARIANTS])
def test_declared_needs_are_the_calls_a_loss_makes(name, params, theta_ini, ref_model, batch):
    objective = build_objective(name, params)
    rec = _Recording(ref_model)
    with torch.no_grad():
        objective.loss(theta_ini, batch, rec)
    assert objective.reference_needs() == rec.calls
    assert objective.needs_reference == bool(rec.calls)


@pytest.mark.parametrize("name,params", VARIANTS, ids=[f"{n}-{p}" for n, p in VARIANTS])
def test_declared_scored_parts_are_the_parts_a_loss_scores(name, params, theta_ini, ref_model, batch, monkeypatch):
    """`Objective.scored_parts` (which batches share one decoder pass) names exactly the parts a real loss
    scores with the label-position head under the trained model."""
    import unlearnkit.label_logprobs as ll

    objective = build_objective(name, params)
    parts = {id(getattr(batch, p)): p for p in ("forget", "retain", "idk") if getattr(batch, p) is not None}
    seen, real = [], ll.label_nll

    def spy(model, b):
        if model is theta_ini:
            seen.append(parts[id(b)])
        return real(model, b)

    monkeypatch.setattr(ll, "label_nll", spy)
    with torch.no_grad():
        objective.loss(theta_ini, batch, _Recording(ref_model))
    assert set(objective.scored_parts()) == set(seen)


def test_tables_serve_log_probs_and_a_model_serves_the_rest(theta_ini, ref_model, batch, collate_fn, datasets):
    npo = build_objective("npo", {"retain": "kl"})
    assert cached_splits(npo) == ["forget"] and cached_splits(build_objective("idk_dpo")) == ["forget", "idk"]
    assert build_reference(build_objective("grad_diff"), theta_ini).provider is None
    tables = reference_tables(_Recording(ref_model), {"forget": [batch.forget]})
    ref = build_reference(npo, theta_ini, frozen=ref_model, tables=tables)
    assert isinstance(ref.provider, CachedReference) and ref.record() == {
        "calls": ["forget_logprobs", "retain_logits"], "cached": ["forget"], "model": "ref_model"}
    want = sequence_logprobs(ref_model, batch.forget)
    torch.testing.assert_close(ref.provider.forget_logprobs(batch.forget).sum, want.sum)
    torch.testing.assert_close(ref.provider.retain_logits(batch.retain), model_forward(ref_model, batch.retain).logits)
    # every log-prob cached and nothing else asked: no model at all
    assert build_reference(build_objective("npo"), theta_ini, tables=tables).record()["model"] is None


def test_copy_of_theta_ini_and_disabled_adapters(theta_ini, batch):
    kl = build_objective("kl")
    before = model_forward(theta_ini, batch.retain).logits.detach()
    ref = build_reference(kl, theta_ini, copy_trained=True)
    assert ref.model == "frozen copy of θ_ini"
    with torch.no_grad():
        for p in theta_ini.parameters():
            p.add_(0.1)
    torch.testing.assert_close(ref.provider.retain_logits(batch.retain), before)   # the copy did not move

    peft = apply_lora(copy.deepcopy(theta_ini), LoraSettings(4, 8, 0.0, ["q_proj", "v_proj"]))
    assert build_reference(kl, peft).model == "disabled adapters"


def test_the_trained_model_is_refused_as_its_own_reference(theta_ini, ref_model):
    npo = build_objective("npo")
    with pytest.raises(ValueError, match="reference model is the model being trained"):
        build_reference(npo, theta_ini, frozen=theta_ini)
    base = ref_model
    peft = apply_lora(base, LoraSettings(4, 8, 0.0, ["q_proj", "v_proj"]))
    with pytest.raises(ValueError, match="shares its trainable weights"):
        build_reference(npo, peft, frozen=base)   # peft injected its trainable layers into `base`
    with pytest.raises(ValueError, match="needs \\['retain_logits'\\] from a reference model"):
        build_reference(build_objective("kl"), theta_ini)   # no θ_ini, no adapters, no copy allowed
