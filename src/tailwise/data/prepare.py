"""The trainer-facing data entry point: source -> long tail -> validation split -> label noise.

:func:`prepare_data` returns a :class:`DataBundle` with train / val / test :class:`ArrayDataset`, the
normalisation constants and a JSON-serialisable ``info`` record of every choice made.

Order of operations:

1. load the source (:func:`tailwise.data.registry.load_source`);
2. long-tail subsample the training set (``long_tail`` dict; by the true labels when the source has
   ``clean_y``, e.g. CIFAR-10N). With the CDB convention the validation
   set is taken first, as in the CDB-loss code: the last ``val_per_class`` (25) samples of every class
   in file order, and ``n_max`` defaults to the smallest class count of what remains (475 on CIFAR-100);
3. hold out a stratified validation split from the (long-tailed) training set: ``val_per_class`` per
   class, or ``val_fraction`` of each class with at least one per class (``val_fraction=0`` gives an
   empty validation set, the official LDAM protocol, which then selects on the test set);
4. inject label noise (``noise`` dict) into the training set and, unless ``noise_val`` is False, into
   the validation set (one draw over both, since validation comes from the same noisy source); the
   true labels stay in ``clean_y``. The test set is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tailwise._validation import check_in_choices
from tailwise.data.arrays import ArrayDataset
from tailwise.data.long_tail import LT_CONVENTIONS, LT_PROFILES, long_tail_counts, long_tail_subsample
from tailwise.data.noise import NOISE_KINDS, apply_noise, transition_matrix
from tailwise.data.registry import load_source
from tailwise.data.splits import per_class_tail_split, train_val_split

__all__ = ["LONG_TAIL_KEYS", "NOISE_KEYS", "DataBundle", "prepare_data"]

LONG_TAIL_KEYS = ("profile", "rho", "convention", "seed", "n_max", "val_per_class")
NOISE_KEYS = ("kind", "rate", "seed", "noise_val", "grouping", "norm_std")


@dataclass
class DataBundle:
    """Everything the trainer needs from the data layer.

    Attributes:
        train: training set (long-tailed and / or noisy as asked; ``clean_y`` holds the true labels
            when noise was injected).
        val: held-out validation set (from the training data; may be empty).
        test: the source's test set, untouched.
        num_classes: ``C``.
        class_names: class names or None.
        mean: per-channel normalisation mean (inputs scaled to [0, 1]).
        std: per-channel normalisation standard deviation.
        augment: whether pad-crop / flip augmentation suits the data.
        input_shape: shape of one input.
        info: JSON-serialisable record: dataset, options, per-split sizes and class counts, long-tail
            settings, validation settings, noise settings with realised rates and transition matrix.
    """

    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    num_classes: int
    class_names: list[str] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool
    input_shape: tuple[int, ...]
    info: dict[str, Any] = field(default_factory=dict)


def _check_keys(name: str, given: dict[str, Any] | None, valid: tuple[str, ...]) -> dict[str, Any]:
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise TypeError(f"{name} must be a dict with keys from {list(valid)}; got {type(given).__name__}")
    unknown = sorted(k for k in given if k not in valid)
    if unknown:
        raise ValueError(f"unknown {name} key(s) {unknown}; valid keys: {list(valid)}")
    return dict(given)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def _noise_rate(ds: ArrayDataset) -> float | None:
    if ds.clean_y is None or len(ds) == 0:
        return None
    return float((ds.y != ds.clean_y).to(torch.float64).mean())


def _concat(a: ArrayDataset, b: ArrayDataset) -> ArrayDataset:
    clean = None
    if a.clean_y is not None and b.clean_y is not None:
        clean = torch.cat([a.clean_y, b.clean_y])
    return ArrayDataset(torch.cat([a.x, b.x]), torch.cat([a.y, b.y]), a.num_classes, a.class_names, clean,
                        torch.cat([a.index, b.index]))


def prepare_data(
    name: str,
    *,
    data_dir: str | Path | None = None,
    long_tail: dict[str, Any] | None = None,
    noise: dict[str, Any] | None = None,
    val_fraction: float = 0.1,
    val_per_class: int | None = None,
    seed: int = 0,
    **source_options: Any,
) -> DataBundle:
    """Load a dataset and build the train / val / test splits (see the module docstring for the order).

    Args:
        name: a registered source (``tailwise.data.DATASETS.names()``).
        data_dir: data folder (default :func:`tailwise.data.default_data_dir`).
        long_tail: None for the source as is, or a dict with keys ``rho`` (required, >= 1),
            ``profile`` (``exp`` | ``step``, default ``exp``), ``convention`` (``ldam`` | ``cdb``, default
            ``ldam``), ``seed`` (default 0, the official value), ``n_max`` (default: the smallest class
            count, so that every class can supply its share; equal to the per-class count on balanced
            sources such as CIFAR), ``val_per_class`` (CDB only, default 25).
        noise: None for no synthetic noise, or a dict with keys ``kind`` (one of
            :data:`tailwise.data.noise.NOISE_KINDS`), ``rate``, ``seed`` (default: ``seed``),
            ``noise_val`` (default True), and the kind options ``grouping`` / ``norm_std``.
        val_fraction: fraction of each class held out for validation (ignored when ``val_per_class`` is
            given or with the CDB convention).
        val_per_class: number per class held out for validation.
        seed: seed of the validation split (and default noise seed).
        **source_options: options of the source (e.g. ``label_set="worse"`` for ``cifar10n``).

    Returns:
        A :class:`DataBundle`.

    Raises:
        ValueError: unknown dataset, unknown option or dict key (the message lists the valid ones), bad
            values (``rho < 1``, unknown noise kind, ...).
        FileNotFoundError: a missing data file (named in the message).
    """
    lt = _check_keys("long_tail", long_tail, LONG_TAIL_KEYS)
    nz = _check_keys("noise", noise, NOISE_KEYS)
    if lt and "rho" not in lt:
        raise ValueError(f"long_tail needs 'rho' (the imbalance ratio >= 1); got keys {sorted(lt)}")
    if nz:
        if "kind" not in nz or "rate" not in nz:
            raise ValueError(f"noise needs 'kind' and 'rate'; got keys {sorted(nz)}")
        check_in_choices("noise kind", nz["kind"], NOISE_KINDS)

    source = load_source(name, data_dir, **source_options)
    train_full, test = source.train, source.test
    num_classes = train_full.num_classes
    info: dict[str, Any] = {
        "dataset": name,
        "source_options": _jsonable(source_options),
        "seed": int(seed),
        "num_classes": num_classes,
        "source_train_size": len(train_full),
    }

    # 2. long tail (CDB: validation first)
    val: ArrayDataset | None = None
    train = train_full
    if lt:
        profile = lt.get("profile", "exp")
        convention = lt.get("convention", "ldam")
        check_in_choices("long_tail profile", profile, LT_PROFILES)
        check_in_choices("long_tail convention", convention, LT_CONVENTIONS)
        lt_seed = int(lt.get("seed", 0))
        if convention == "cdb":
            cdb_val = int(lt.get("val_per_class", 25))
            tr_idx, va_idx = per_class_tail_split(train.clean_y if train.clean_y is not None else train.y, cdb_val)
            val = train.subset(va_idx)
            train = train.subset(tr_idx)
        elif "val_per_class" in lt:
            raise ValueError("long_tail 'val_per_class' applies to convention='cdb' only; "
                             "use prepare_data(val_per_class=...) for the LDAM convention")
        lt_labels = train.clean_y if train.clean_y is not None else train.y
        available = torch.bincount(lt_labels, minlength=num_classes)
        n_max = int(lt.get("n_max", int(available.min())))
        counts = long_tail_counts(n_max, num_classes, lt["rho"], profile)
        idx = long_tail_subsample(lt_labels, counts, seed=lt_seed, convention=convention)
        train = train.subset(idx)
        info["long_tail"] = {"profile": profile, "rho": float(lt["rho"]), "convention": convention,
                             "seed": lt_seed, "n_max": n_max, "counts": counts}
        if convention == "cdb":
            info["long_tail"]["val_per_class"] = cdb_val

    # 3. validation split
    if val is None:
        if val_per_class is not None:
            tr_idx, va_idx = train_val_split(train.y, val_per_class=val_per_class, seed=seed)
            info["validation"] = {"val_per_class": int(val_per_class), "stratified": True}
        else:
            tr_idx, va_idx = train_val_split(train.y, val_fraction=val_fraction, seed=seed)
            info["validation"] = {"val_fraction": float(val_fraction), "stratified": True}
        val = train.subset(va_idx)
        train = train.subset(tr_idx)
    else:
        info["validation"] = {"rule": "cdb: last val_per_class of each class in file order",
                              "val_per_class": info["long_tail"]["val_per_class"]}

    # 4. label noise
    if nz:
        noise_seed = int(nz.get("seed", seed))
        noise_val = bool(nz.get("noise_val", True))
        target = _concat(train, val) if noise_val else train
        true = target.clean_y if target.clean_y is not None else target.y
        options = {k: nz[k] for k in ("grouping", "norm_std") if k in nz}
        result = apply_noise(nz["kind"], target.y, nz["rate"], num_classes, seed=noise_seed,
                             features=target.x if nz["kind"] == "instance" else None, **options)
        noisy = ArrayDataset(target.x, result.labels, num_classes, target.class_names, true, target.index)
        n_tr = len(train)
        train = noisy.subset(torch.arange(n_tr))
        if noise_val:
            val = noisy.subset(torch.arange(n_tr, len(noisy)))
        info["noise"] = {"kind": nz["kind"], "rate": float(nz["rate"]), "seed": noise_seed, "noise_val": noise_val,
                         **{k: _jsonable(v) for k, v in options.items()},
                         "realised_rate_injected": result.noise_rate}

    # 5. record
    info["sizes"] = {"train": len(train), "val": len(val), "test": len(test)}
    info["class_counts"] = {"train": train.class_counts().tolist(), "val": val.class_counts().tolist(),
                            "test": test.class_counts().tolist()}
    rate = _noise_rate(train)
    if rate is not None:
        noise_info = info.setdefault("noise", {"kind": "source labels"})
        noise_info["realised_rate_train"] = rate
        noise_info["realised_rate_val"] = _noise_rate(val)
        noise_info["transition_train"] = transition_matrix(train.clean_y, train.y, num_classes).tolist()
    return DataBundle(train=train, val=val, test=test, num_classes=num_classes, class_names=train_full.class_names,
                      mean=tuple(source.mean), std=tuple(source.std), augment=bool(source.augment),
                      input_shape=tuple(source.input_shape), info=info)
