"""Typed run configuration, recipes and ``key=value`` overrides.

A configuration has fixed sections (``data``, ``optim``, ``schedule``, ``train``) whose fields are typed
dataclass fields, and component sections (``model``, ``loss``, ``weights``, ``sampler``, ``transform``)
made of a registry ``name`` plus free parameters that the named component validates when it is built.
Unknown or mistyped keys fail with the list of valid keys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

__all__ = [
    "ComponentConfig",
    "ConfigError",
    "DataConfig",
    "OptimConfig",
    "RunConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "list_recipes",
    "load_recipe",
    "parse_override",
]


class ConfigError(ValueError):
    """A configuration, recipe or override that cannot be used."""


@dataclass
class DataConfig:
    """Dataset, long-tail, noise and validation-split settings.

    ``long_tail`` holds ``profile`` (``exp`` | ``step``), ``rho``, ``convention`` (``ldam`` | ``cdb``)
    and ``seed``; ``noise`` holds ``kind``, ``rate`` and ``seed``; ``options`` go to the dataset source
    (``num_samples`` for ``mnist1d``, ``label_set`` for ``cifar10n``, ``path`` for file sources).
    ``normalize: false`` feeds the model inputs in [0, 1] (randomized smoothing adds its noise there).
    """

    name: str = "mnist1d"
    data_dir: str | None = None
    long_tail: dict[str, Any] | None = None
    noise: dict[str, Any] | None = None
    val_fraction: float = 0.1
    val_per_class: int | None = None
    seed: int = 0
    augment: bool | None = None
    normalize: bool = True
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """Optimizer: ``sgd`` | ``adam`` | ``adamw``."""

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class ScheduleConfig:
    """Learning-rate schedule per epoch: linear warm-up, then ``multistep`` | ``cosine`` | ``constant``.

    ``multistep`` multiplies the rate by ``gamma`` at each milestone (LDAM-DRW: x0.01 at 160 and 180).
    Warm-up follows the LDAM-DRW rule: epoch ``e < warmup_epochs`` uses ``lr * (e + 1) / warmup_epochs``.
    """

    name: str = "multistep"
    warmup_epochs: int = 5
    milestones: list[int] = field(default_factory=lambda: [160, 180])
    gamma: float = 0.01
    min_lr: float = 0.0


@dataclass
class TrainConfig:
    """Loop settings. ``batch_size`` is the global batch (split evenly over DDP ranks).

    ``susceptibility`` (e.g. ``{batch_size: 128, aggregation: running_mean}``) probes the model at the
    start of every epoch with random labels on training inputs (Forouzesh et al., ICLR 2023) and logs
    ``susceptibility_r`` and ``zeta`` per epoch.

    ``compile`` compiles each training step's forward and loss with ``torch.compile``: ``true`` for
    the default backend (inductor, which needs a C++ compiler on the CPU), or a backend's name.
    Evaluation, checkpoints and losses that call the model themselves run uncompiled.
    """

    epochs: int = 200
    batch_size: int = 128
    eval_batch_size: int = 1024
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    amp_dtype: str = "bfloat16"
    channels_last: bool = False
    output_dir: str = "runs"
    run_name: str | None = None
    select_metric: str = "accuracy"
    nan_policy: str = "error"
    progress: bool = True
    threads: int | None = None
    plots: bool = True
    susceptibility: dict[str, Any] | None = None
    grad_clip_norm: float | None = None
    drop_last: bool = False
    compile: bool | str = False


@dataclass
class ComponentConfig:
    """A registry component: its ``name`` plus the parameters given to its constructor."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    """A whole run: the fixed sections and the components."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ComponentConfig = field(default_factory=lambda: ComponentConfig("auto"))
    loss: ComponentConfig = field(default_factory=lambda: ComponentConfig("ce"))
    weights: ComponentConfig = field(default_factory=lambda: ComponentConfig("none"))
    sampler: ComponentConfig = field(default_factory=lambda: ComponentConfig("shuffle"))
    transform: ComponentConfig = field(default_factory=lambda: ComponentConfig("none"))
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    recipe: str | None = None
    description: str = ""


_SECTIONS = {"data": DataConfig, "optim": OptimConfig, "schedule": ScheduleConfig, "train": TrainConfig}
_COMPONENTS = ("model", "loss", "weights", "sampler", "transform")
_TOP_LEVEL = ("recipe", "description")


def _check_type(where: str, value: Any, annotation: Any) -> Any:
    """Check (and lightly coerce) ``value`` against a dataclass field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_type(where, value, option)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list; got {value!r}")
        (inner,) = typing.get_args(annotation) or (Any,)
        return [_check_type(f"{where}[{i}]", v, inner) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping; got {value!r}")
        return dict(value)
    if annotation is Any:
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false; got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer; got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number; got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string; got {value!r}")
        return value
    return value


def _section_from_dict(name: str, cls: type, values: Mapping[str, Any]) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(f"config section {name!r} must be a mapping; got {values!r}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in valid]
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in section {name!r}; valid keys: {valid}")
    kwargs = {k: _check_type(f"{name}.{k}", v, hints[k]) for k, v in values.items()}
    return cls(**kwargs)


def _component_from_dict(name: str, values: Any) -> ComponentConfig:
    if isinstance(values, str):
        return ComponentConfig(values)
    if not isinstance(values, Mapping) or "name" not in values:
        raise ConfigError(f"config section {name!r} must be a mapping with a 'name' key; got {values!r}")
    params = {k: v for k, v in values.items() if k != "name"}
    if "params" in params and isinstance(params["params"], Mapping):
        nested = dict(params.pop("params"))
        params.update(nested)
    return ComponentConfig(str(values["name"]), params)


def config_from_dict(values: Mapping[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from a nested mapping (a parsed recipe)."""
    valid = [*_SECTIONS, *_COMPONENTS, *_TOP_LEVEL]
    unknown = [k for k in values if k not in valid]
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; valid sections: {valid}")
    cfg = RunConfig()
    for key, cls in _SECTIONS.items():
        if key in values:
            setattr(cfg, key, _section_from_dict(key, cls, values[key]))
    for key in _COMPONENTS:
        if key in values:
            setattr(cfg, key, _component_from_dict(key, values[key]))
    for key in _TOP_LEVEL:
        if key in values:
            setattr(cfg, key, values[key])
    return cfg


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The flat-component mapping form of a config (what recipes and ``config.yaml`` hold)."""
    out: dict[str, Any] = {}
    for key in _SECTIONS:
        out[key] = dataclasses.asdict(getattr(cfg, key))
    for key in _COMPONENTS:
        comp: ComponentConfig = getattr(cfg, key)
        out[key] = {"name": comp.name, **comp.params}
    out["recipe"] = cfg.recipe
    out["description"] = cfg.description
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into the key path and a YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override must look like key=value; got {text!r}")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override has an empty key; got {text!r}")
    try:
        import yaml

        value = yaml.safe_load(raw) if raw.strip() else None
    except Exception:  # any YAML error: keep the raw string
        value = raw
    if isinstance(value, str) and any(c in value.lower() for c in "e."):
        # YAML 1.1 reads 1e-3 as a string; a user writing it means the number
        with contextlib.suppress(ValueError):
            value = float(value)
    return path, value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides to a recipe mapping (validated when the config is built).

    ``loss.max_margin=0.3`` sets a component parameter; ``loss=ldam`` replaces the component and drops
    its previous parameters, while ``model.name=resnet56`` changes the name and keeps the parameters
    (``head: normed``); ``data.long_tail.rho=50`` reaches inside a dict.
    """
    values = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in values.items()}
    for text in overrides:
        path, value = parse_override(text)
        head = path[0]
        if head in _COMPONENTS and len(path) == 1:
            values[head] = {"name": value}
            continue
        node = values
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"cannot set {'.'.join(path)}: {part!r} is not a section")
            else:
                child = dict(child)
            node[part] = child
            node = child
        node[path[-1]] = value
    return values


def _recipe_dir() -> Path:
    return Path(str(resources.files("tailwise") / "recipes"))


def list_recipes() -> dict[str, str]:
    """Shipped recipe names and their first description line."""
    out = {}
    for path in sorted(_recipe_dir().glob("*.yaml")):
        out[path.stem] = _read_yaml(path).get("description", "").strip().splitlines()[0:1]
        out[path.stem] = out[path.stem][0] if out[path.stem] else ""
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"recipe file {path} must hold a mapping; got {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if key in out and isinstance(out[key], dict) and isinstance(value, Mapping):
            if key in _COMPONENTS and "name" in value and value["name"] != out[key].get("name"):
                out[key] = dict(value)
            else:
                out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """Read a shipped recipe by name (or a YAML file by path), resolving ``extends`` chains."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = _recipe_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown recipe {name_or_path!r}; available recipes: {sorted(list_recipes())}")
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is not None:
        data = _merge(load_recipe(str(parent)), data)
    data.setdefault("recipe", path.stem)
    if parent is not None:
        data["recipe"] = path.stem
    return data
