"""Shipped recipes: each one loads, names registered components with accepted parameters, and trains.

Every recipe is trained for two epochs on a tiny long-tailed MNIST-1D with an MLP, with its deferred
stage (DRW switch, ABSGD ``start_epoch``) moved to epoch 1 so that both stages run, and the training loss
must stay finite.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from tailwise.cli.demo import DEMO_RECIPES, demo_config
from tailwise.registry import BATCH_TRANSFORMS, LOSSES, MODELS, SAMPLERS, WEIGHT_SCHEDULES
from tailwise.train.config import apply_overrides, config_from_dict, list_recipes, load_recipe
from tailwise.train.trainer import Trainer, load_components

RECIPES = sorted(list_recipes())

REQUIRED = {
    "ce", "ce-drw", "focal", "class-balanced", "ldam", "ldam-drw", "cb-resample", "reweight", "vs", "la",
    "cdt", "bayias", "bayias-unimix", "cdb", "cdb-s", "absgd", "ldam-drw-absgd", "logitclip", "alpha-loss",
    "label-smoothing", "mbls", "cals",
}

TINY = [
    "data.name=mnist1d",
    "data.options={num_samples: 600}",
    "data.val_fraction=0.2",
    "train.epochs=2",
    "train.batch_size=64",
    "train.eval_batch_size=512",
    "train.progress=false",
    "train.plots=false",
    "train.threads=1",
    "schedule.warmup_epochs=1",
    "schedule.milestones=[1]",
]


def tiny_config(name: str) -> Any:
    """``name`` on 600 MNIST-1D samples (rho = 10), an MLP with the recipe's model options, 2 epochs."""
    values = load_recipe(name)
    overrides = list(TINY)
    if values.get("data", {}).get("long_tail"):
        overrides.append("data.long_tail.rho=10")  # keeps the recipe's convention (cdb: 25 val per class)
    else:
        overrides.append("data.long_tail={profile: exp, rho: 10}")
    if values.get("weights", {}).get("name") == "drw":
        overrides.append("weights.switch_epoch=1")
    if "start_epoch" in values.get("loss", {}):
        overrides.append("loss.start_epoch=1")
    values = apply_overrides(values, overrides)
    if values.get("model", {}).get("name") == "linf_dist_mlp":
        values["model"] = {**values["model"], "width": 32, "depth": 3}  # l_inf-dist objectives need their model
    else:
        values["model"] = {**values.get("model", {}), "name": "mlp"}  # keep e.g. head: normed
    return config_from_dict(values)


def test_required_recipes_are_shipped() -> None:
    assert set(RECIPES) >= REQUIRED, sorted(REQUIRED - set(RECIPES))


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_loads_and_names_valid_components(name: str) -> None:
    load_components()
    cfg = config_from_dict(load_recipe(name))
    assert cfg.recipe == name
    assert cfg.train.epochs >= 1 and cfg.train.batch_size >= 1
    summary = list_recipes()[name]
    assert summary and len(summary) <= 120, f"first description line of {name!r}: {summary!r}"
    checks = [(MODELS, cfg.model), (LOSSES, cfg.loss), (SAMPLERS, cfg.sampler)]
    if cfg.weights.name != "none":
        checks.append((WEIGHT_SCHEDULES, cfg.weights))
    if cfg.transform.name != "none":
        checks.append((BATCH_TRANSFORMS, cfg.transform))
    for registry, comp in checks:
        if registry is MODELS and comp.name == "auto":
            continue
        accepted = registry.parameters(comp.name)
        unknown = sorted(set(comp.params) - set(accepted))
        assert not unknown, f"{name}: {registry.kind} {comp.name!r} does not take {unknown}"
    if cfg.data.long_tail is None:
        # balanced-data recipes: calibration losses and the certified-robustness objectives
        balanced = ("cals", "label_smoothing", "mbls", "gaussian_augmentation", "smoothmix", "linf_v1", "linf_v2")
        assert cfg.data.noise is not None or cfg.loss.name in balanced


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_trains_on_tiny_data(name: str, tmp_path: Path) -> None:
    cfg = tiny_config(name)
    trainer = Trainer(cfg, run_dir=tmp_path / name, log=None)
    summary = trainer.fit()
    assert [r["epoch"] for r in trainer.history] == [0, 1]
    for record in trainer.history:
        assert math.isfinite(record["train_loss"]), (name, record)
        assert record["skipped_steps"] == 0
    assert 0.0 <= summary["test_best"]["accuracy"] <= 1.0


def test_demo_recipes_exist_and_shorten_their_deferred_stages() -> None:
    assert {"ce", "ce-drw"} <= set(DEMO_RECIPES)
    assert set(DEMO_RECIPES) <= set(RECIPES)
    for name, extra in DEMO_RECIPES.items():
        cfg = demo_config(name, 20, extra)
        assert cfg.train.epochs == 20
        assert cfg.data.name == "mnist1d"
        if cfg.weights.name == "drw":
            assert cfg.weights.params["switch_epoch"] < 20, name
        if "start_epoch" in cfg.loss.params:
            assert cfg.loss.params["start_epoch"] < 20, name
        assert all(m < 20 for m in cfg.schedule.milestones), name
        # the demo keeps the recipe's model options (LDAM's cosine head)
        recipe_model = {k: v for k, v in load_recipe(name).get("model", {}).items() if k != "name"}
        assert recipe_model.items() <= cfg.model.params.items(), (name, cfg.model.params)
