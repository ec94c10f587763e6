"""Method presets: shipped as package data, the base layer under every user key, recorded, and faithful to
open-unlearning's trainer configs."""
from __future__ import annotations

import fnmatch
import logging
import tomllib
from importlib import resources
from pathlib import Path

import pytest
import yaml

from unlearnkit.config import ConfigError
from unlearnkit.objectives import OBJECTIVES
from unlearnkit.presets import describe, load_preset, load_with_preset, preset_names
from unlearnkit.train.unlearn import UnlearnConfig

REPO = Path(__file__).resolve().parents[2]


def test_every_method_has_a_preset_shipped_as_package_data():
    folder = resources.files("unlearnkit.presets") / "methods"
    shipped = sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml"))
    assert shipped == [f"{m}.yaml" for m in OBJECTIVES.names()] and preset_names() == OBJECTIVES.names()
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["unlearnkit"]
    for name in shipped:
        assert any(fnmatch.fnmatch(f"presets/methods/{name}", g) for g in globs), f"{name} not in package-data"
        values = yaml.safe_load((folder / name).read_text(encoding="utf-8"))
        assert values == load_preset(name[:-5]) and values["method"] == name[:-5]
        load_with_preset(UnlearnConfig, overrides=[f"method={values['method']}"])  # every preset validates
    # configs/methods in a checkout is the same folder, not a second copy
    assert (REPO / "configs" / "methods").resolve() == (REPO / "src" / "unlearnkit" / "presets" / "methods").resolve()


def test_preset_is_the_base_layer_and_user_keys_override_it_one_by_one(tmp_path):
    cfg = load_with_preset(UnlearnConfig, overrides=["method=simnpo", "params.beta=3.0", "lr=2e-5"])
    assert cfg.preset == "simnpo" and cfg.lr == 2e-5 and cfg.warmup == 0.1 and cfg.retain_batch_size == 8
    assert cfg.params == {"beta": 3.0, "delta": 0.0, "forget_weight": 0.125, "retain": "nll", "retain_weight": 1.0}
    objective = cfg.objective()
    assert objective.needs_retain and objective.config.forget_weight == 0.125

    # the layers: preset ← base (a sweep cell) ← -c file ← key=value
    yml = tmp_path / "mine.yaml"
    yml.write_text("params: {retain_weight: 2.0}\nepochs: 3\n")
    cfg = load_with_preset(UnlearnConfig, yml, ["params.beta=0.2"], base={"method": "npo", "epochs": 5, "lr": 3e-5})
    assert (cfg.method, cfg.epochs, cfg.lr, cfg.grad_accum) == ("npo", 3, 3e-5, 4)
    assert cfg.params == {"beta": 0.2, "retain": "nll", "retain_weight": 2.0}

    # the default method takes its preset too; preset=none gives the bare dataclass defaults
    assert load_with_preset(UnlearnConfig).params == load_preset("npo")["params"]
    bare = load_with_preset(UnlearnConfig, overrides=["method=npo", "preset=none"])
    assert bare.preset == "none" and bare.params == {} and bare.warmup == UnlearnConfig.warmup


def test_preset_errors_name_the_setting():
    with pytest.raises(ConfigError, match="preset='nope': no such preset; available: ga, grad_diff"):
        load_with_preset(UnlearnConfig, overrides=["preset=nope"])
    with pytest.raises(ConfigError, match="preset='npo' configures method 'npo', not method='ga'"):
        load_with_preset(UnlearnConfig, overrides=["preset=npo", "method=ga"])
    assert load_with_preset(UnlearnConfig, overrides=["preset=wga"]).method == "wga"
    with pytest.raises(ConfigError, match="preset='auto' is resolved while loading"):
        UnlearnConfig(method="npo", preset="auto")
    with pytest.raises(ConfigError, match="config key 'lerning_rate'"):  # bad keys still reported by load_config
        load_with_preset(UnlearnConfig, overrides=["method=npo", "lerning_rate=1"])


def test_describe_records_the_preset_file_and_the_changed_keys():
    from unlearnkit.config import to_dict

    cfg = load_with_preset(UnlearnConfig, overrides=["method=npo", "params.beta=0.5", "max_steps=3"])
    info = describe(to_dict(cfg))
    assert info["name"] == "npo" and info["file"] == "unlearnkit/presets/methods/npo.yaml"
    assert info["overridden"] == {"params.beta": {"preset": 0.1, "used": 0.5}}
    assert describe(to_dict(UnlearnConfig(method="npo"))) is None


def test_a_retain_set_the_method_will_not_use_is_a_warning(caplog):
    from unlearnkit.train.unlearn import _load_data

    setting = "params.retain=kl or params.retain=nll"
    for method in ("ga", "undial"):
        cfg = load_with_preset(UnlearnConfig, overrides=[f"method={method}", "forget=synthetic:forget,people=4",
                                                         "retain=synthetic:retain,people=4"])
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="unlearnkit.train.unlearn"):
            _, retain, _, _ = _load_data(cfg, cfg.objective())
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert retain == [] and len(warned) == 1, caplog.text
        assert f"method {method} has no retain term" in warned[0] and setting in warned[0]


def test_a_preset_retain_term_without_retain_data_says_how_to_drop_it():
    from unlearnkit.train.unlearn import _load_data

    cfg = load_with_preset(UnlearnConfig, overrides=["method=npo", "forget=synthetic:forget,people=4"])
    with pytest.raises(ValueError, match="params.retain=none to drop the retain term, which preset 'npo' sets"):
        _load_data(cfg, cfg.objective())


# open-unlearning (locuslab/open-unlearning) configs/trainer/<Trainer>.yaml method_args, and its TOFU
# experiment's lr and epochs (configs/experiment/unlearn/tofu/default.yaml, merged after the trainer file);
# UNDIAL's lr is its trainer file's and the paper's (the preset's comment states the composed run's 1e-5).
OPEN_UNLEARNING = {
    "ga": dict(gamma=1.0, alpha=None, lr=1e-5),                                  # GradAscent
    "grad_diff": dict(gamma=1.0, alpha=1.0, retain="nll", lr=1e-5),              # GradDiff
    "kl": dict(gamma=1.0, alpha=1.0, retain="kl", lr=1e-5),                      # GradDiff, retain_loss_type=KL
    "npo": dict(gamma=1.0, alpha=1.0, retain="nll", beta=0.1, lr=1e-5),          # NPO
    "simnpo": dict(gamma=0.125, alpha=1.0, retain="nll", beta=4.5, delta=0.0, lr=1e-5),  # SimNPO
    "idk_dpo": dict(gamma=1.0, alpha=1.0, retain="nll", beta=0.1, lr=1e-5),      # DPO (experiment tofu/idk.yaml)
    "wga": dict(gamma=1.0, alpha=1.0, retain="nll", beta=1.0, lr=1e-5),          # WGA
    "rmu": dict(gamma=1.0, alpha=1.0, retain="hidden", steering_coeff=2.0, layer=7, lr=1e-5),  # RMU, EMBED_DIFF
    "undial": dict(gamma=1.0, alpha=None, beta=10.0, lr=1e-4),                   # UNDIAL: alpha 0.0
}


@pytest.mark.parametrize("method", sorted(OPEN_UNLEARNING))
def test_presets_match_open_unlearning(method):
    ref = dict(OPEN_UNLEARNING[method])
    cfg = load_with_preset(UnlearnConfig, overrides=[f"method={method}"])
    hp = cfg.objective().config
    batch = cfg.forget_batch_size * cfg.grad_accum
    assert (cfg.lr, cfg.epochs, batch, cfg.weight_decay) == (ref.pop("lr"), 10, 32, 0.01)
    assert hp.forget_weight == ref.pop("gamma")
    alpha = ref.pop("alpha")
    assert (hp.retain, hp.retain_weight) == ((ref.pop("retain"), alpha) if alpha else ("none", hp.retain_weight))
    for key, value in ref.items():
        assert getattr(hp, key) == value, key
