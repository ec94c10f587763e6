"""The generic registry, objective construction and hyper-parameter checks, and refused inputs."""
from dataclasses import fields

import pytest

from unlearnkit.objectives import OBJECTIVES, Registry, UnknownNameError, UnlearnBatch, build_objective
from unlearnkit.objectives.ga import GradientAscent

EXPECTED = {"ga", "grad_diff", "kl", "idk_nll", "idk_dpo", "npo", "simnpo", "rmu", "wga", "tnpo", "wtnpo", "undial"}


def test_registry_refuses_duplicates_and_suggests():
    reg = Registry("metric")
    reg.register("rouge_l")(lambda: 1)
    with pytest.raises(ValueError, match="metric 'rouge_l' is already registered"):
        reg.register("rouge_l")(lambda: 2)
    assert reg.get("rouge_l")() == 1
    with pytest.raises(KeyError) as exc:
        reg.get("rouge")
    assert str(exc.value) == "unknown metric 'rouge'; did you mean 'rouge_l'? available: rouge_l"
    with pytest.raises(ValueError, match="available: rouge_l"):  # also a ValueError
        reg.get("zzz")


def test_registry_base_check():
    reg = Registry("objective", base=GradientAscent)
    with pytest.raises(TypeError, match="must be a subclass of GradientAscent"):
        reg.register("x")(int)


def test_all_objectives_registered():
    assert EXPECTED <= set(OBJECTIVES.names())


def test_unknown_objective_lists_known_names():
    with pytest.raises(UnknownNameError) as exc:
        build_objective("npoo")
    msg = str(exc.value)
    assert "unknown objective 'npoo'; did you mean 'npo'?" in msg
    assert all(name in msg for name in EXPECTED)


def test_unknown_and_bad_hyperparameters():
    with pytest.raises(ValueError, match="objective 'npo' has no hyper-parameter 'bta'; did you mean 'beta'"):
        build_objective("npo", {"bta": 0.1})
    with pytest.raises(ValueError, match=r"NPOConfig.beta=0.0: must be > 0"):
        build_objective("npo", {"beta": 0})
    with pytest.raises(TypeError, match=r"NPOConfig.beta='x': expected float"):
        build_objective("npo", {"beta": "x"})
    with pytest.raises(ValueError, match=r"retain='kll': unknown retain regulariser"):
        build_objective("ga", {"retain": "kll"})
    with pytest.raises(ValueError, match=r"retain='hidden'.*reads \['layer'\]"):
        build_objective("npo", {"retain": "hidden"})
    with pytest.raises(ValueError, match="reduction='x'"):
        build_objective("ga", {"reduction": "x"})
    assert build_objective("npo", {"beta": 1}).config.beta == 1.0  # ints accepted as floats


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_field_has_help(name):
    cfg_cls = OBJECTIVES.get(name).Config
    for f in fields(cfg_cls):
        assert f.metadata.get("help"), f"{name}: field {f.name} has no help string"


def test_hyperparameters_listing():
    listed = {name: (default, help) for name, default, help in OBJECTIVES.get("npo").hyperparameters()}
    assert listed["beta"][0] == 0.1 and "β" in listed["beta"][1]
    assert set(listed) == {"forget_weight", "retain", "retain_weight", "beta"}


def test_presets_share_code_and_change_defaults():
    gd, kl, wtnpo = (OBJECTIVES.get(n) for n in ("grad_diff", "kl", "wtnpo"))
    assert issubclass(gd, GradientAscent) and issubclass(kl, GradientAscent)
    assert gd.forget_loss is GradientAscent.forget_loss
    assert build_objective("grad_diff").config.retain == "nll"
    assert build_objective("kl").config.retain == "kl"
    assert build_objective("wtnpo").config.alpha == 1.5 and build_objective("tnpo").config.alpha == 0.0
    assert build_objective("grad_diff", {"retain_weight": 2.0}).config.retain_weight == 2.0


def test_needs_flags():
    assert not build_objective("ga").needs_retain and not build_objective("ga").needs_reference
    assert build_objective("grad_diff").needs_retain and not build_objective("grad_diff").needs_reference
    assert build_objective("kl").needs_reference  # KL on retain needs reference logits
    assert build_objective("npo").needs_reference and not build_objective("npo").needs_retain
    assert build_objective("npo", {"retain": "nll"}).needs_retain
    assert build_objective("idk_dpo").needs_idk and build_objective("idk_dpo").needs_reference
    assert build_objective("rmu").needs_retain and not build_objective("rmu", {"retain": "none"}).needs_reference
    assert not build_objective("simnpo").needs_reference


def test_missing_retain_is_a_clear_error():
    obj = build_objective("grad_diff")
    with pytest.raises(ValueError, match=r"objective 'grad_diff' needs a retain set \(retain='nll'\)"):
        obj.check_inputs(retain=False, idk=False, reference=False)
    # the loss checks before any forward pass (model=None would fail otherwise)
    with pytest.raises(ValueError, match="needs a retain set"):
        obj.loss(None, UnlearnBatch(forget={}), None)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_missing_inputs_refused_per_objective(name):
    obj = build_objective(name)
    if obj.needs_reference:
        with pytest.raises(ValueError, match=f"objective '{name}' needs .* ref is None"):
            obj.check_inputs(retain=True, idk=True, reference=False)
    if obj.needs_idk:
        with pytest.raises(ValueError, match=f"objective '{name}' needs IdK answers"):
            obj.check_inputs(retain=True, idk=False, reference=True)
    obj.check_inputs(retain=True, idk=True, reference=True)


def test_batch_type_checked():
    with pytest.raises(TypeError, match="UnlearnBatch"):
        build_objective("ga").loss(None, {"forget": {}}, None)


@pytest.mark.parametrize("name", ["grad_diff", "rmu", "wtnpo"])
def test_configs_load_through_the_project_config_loader(name):
    """The Config dataclasses (presets included) work with unlearnkit.config (YAML + key=value overrides)."""
    from unlearnkit.config import ConfigError, load_config

    cfg = load_config(OBJECTIVES.get(name).Config, overrides=["retain_weight=2.5"])
    assert build_objective(name, cfg).config.retain_weight == 2.5
    with pytest.raises(ConfigError):
        load_config(OBJECTIVES.get(name).Config, overrides=["bogus=1"])
