"""Run configuration: recipes, overrides and the errors for unknown or mistyped keys."""

from __future__ import annotations

import pytest

from tailwise.train.config import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    list_recipes,
    load_recipe,
    parse_override,
)


def test_shipped_recipes_load_and_validate() -> None:
    names = list_recipes()
    assert {"ce", "ce-drw"} <= set(names)
    for name in names:
        cfg = config_from_dict(load_recipe(name))
        assert cfg.recipe == name
        assert cfg.train.epochs >= 1


def test_extends_merges_parent() -> None:
    cfg = config_from_dict(load_recipe("ce-drw"))
    assert cfg.weights.name == "drw"
    assert cfg.weights.params == {"beta": 0.9999, "switch_epoch": 160}
    assert cfg.schedule.milestones == [160, 180]
    assert cfg.schedule.gamma == 0.01
    assert cfg.data.long_tail == {"profile": "exp", "rho": 100, "convention": "ldam", "seed": 0}


def test_overrides_set_fields_params_and_replace_components() -> None:
    values = apply_overrides(load_recipe("ce-drw"), [
        "train.epochs=3", "data.long_tail.rho=50", "weights.beta=0.999", "loss=focal", "loss.gamma=2",
    ])
    cfg = config_from_dict(values)
    assert cfg.train.epochs == 3
    assert cfg.data.long_tail["rho"] == 50
    assert cfg.weights.params["beta"] == 0.999
    assert cfg.loss.name == "focal" and cfg.loss.params == {"gamma": 2}


def test_round_trip_through_dict() -> None:
    cfg = config_from_dict(load_recipe("ce-drw"))
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['epochz'\] in section 'train'; valid keys: \[.*'epochs'"):
        config_from_dict({"train": {"epochz": 3}})
    with pytest.raises(ConfigError, match=r"unknown config section\(s\) \['trian'\]"):
        config_from_dict({"trian": {}})


def test_mistyped_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"train.epochs must be an integer; got 'ten'"):
        config_from_dict({"train": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match=r"train.amp must be true or false; got 1"):
        config_from_dict({"train": {"amp": 1}})
    with pytest.raises(ConfigError, match=r"optim.lr must be a number"):
        config_from_dict({"optim": {"lr": "fast"}})


def test_bad_override_and_recipe() -> None:
    with pytest.raises(ConfigError, match=r"override must look like key=value; got 'epochs'"):
        parse_override("epochs")
    with pytest.raises(ConfigError, match=r"unknown recipe 'nope'; available recipes: \[.*'ce'"):
        load_recipe("nope")
    with pytest.raises(ConfigError, match=r"must be a mapping with a 'name' key"):
        config_from_dict({"loss": {"gamma": 2}})


def test_parse_override_yaml_values() -> None:
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a=null") == (["a"], None)
    assert parse_override("a=text") == (["a"], "text")


def test_scientific_notation_overrides_are_numbers() -> None:
    assert parse_override("optim.lr=1e-3") == (["optim", "lr"], 1e-3)
    assert parse_override("a=2.5E-6") == (["a"], 2.5e-6)
    assert parse_override("a=resnet32") == (["a"], "resnet32")
    assert parse_override("a=exp") == (["a"], "exp")
