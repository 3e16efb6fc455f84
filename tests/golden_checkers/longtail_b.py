"""Golden checkers for CDB-W (``cdb_*``) and ABSGD (``absgd_*``).

Every value is recomputed from the stored inputs (``class_accuracy``, ``tau_arg``, ``logits``,
``targets``, ``cls_num_list``, ``myLambda``, ``drogamma``, ``abAlpha``, ``cls_weights``) through the
public API; the stored outputs are only compared against.
"""

from __future__ import annotations

import numpy as np
import torch

from golden_checkers._util import close, long, meta, optional_weight, t32, t64
from tailwise.functional import cdb_loss, cdb_tau, cdb_weights, class_difficulty
from tailwise.losses import CDBLoss
from tailwise.optim import ABSGDLoss


def _cdb_rule(data: dict[str, np.ndarray]) -> str:
    """``"imagenet"`` for the ImageNet-LT ``create_loss`` files, ``"cifar"`` for ``CDB_loss``."""
    info = meta(data)
    where = f"{info.get('file', '')} {info.get('callable', '')}"
    if "ImageNet" in where or "create_loss" in where:
        return "imagenet"
    if "CIFAR" in where or "CDB_loss" in where:
        return "cifar"
    return "cifar" if "per_sample_loss" in data else "imagenet"


def _tau_arg(data: dict[str, np.ndarray]) -> str | float:
    raw = str(data["tau_arg"])
    return "dynamic" if raw == "dynamic" else float(raw)


def check_cdb(data: dict[str, np.ndarray]) -> None:
    rule = _cdb_rule(data)
    tau = _tau_arg(data)
    reduction = "official_cifar" if rule == "cifar" else "mean"
    d = class_difficulty(t64(data["class_accuracy"]))
    close(d, data["class_difficulty"], what="class_difficulty")
    if tau == "dynamic":
        close(cdb_tau(d, rule), data["tau_used"], what="tau_used")
    w = cdb_weights(d, tau, rule)
    close(w, data["weights"], what="weights")
    target = long(data["targets"])

    logits = t64(data["logits"], requires_grad=True)
    loss = cdb_loss(logits, target, w, reduction)
    (grad,) = torch.autograd.grad(loss, logits)
    close(loss, data["loss"], what="loss")
    close(grad, data["grad"], rtol=1e-10, atol=1e-12, what="grad")
    if "per_sample_loss" in data:
        close(cdb_loss(logits.detach(), target, w, "none"), data["per_sample_loss"], what="per_sample_loss")

    # the stateful module fed with the same accuracy gives the same loss
    module = CDBLoss(w.numel(), tau=tau, tau_rule=rule)
    module.update_from_accuracy(t64(data["class_accuracy"]))
    close(module(logits.detach(), target), data["loss"], what="CDBLoss module")

    if "loss_f32" in data:
        x32 = t32(data["logits"], requires_grad=True)
        loss32 = cdb_loss(x32, target, w.float(), reduction)
        (g32,) = torch.autograd.grad(loss32, x32)
        close(loss32, data["loss_f32"], rtol=1e-5, atol=1e-6, what="loss_f32")
        if "grad_f32" in data:
            close(g32, data["grad_f32"], rtol=1e-5, atol=1e-6, what="grad_f32")


def _absgd_criterion(data: dict[str, np.ndarray], mode: str) -> ABSGDLoss:
    loss_type = str(data["loss_type"])
    counts = data["cls_num_list"].astype(np.float64)
    weight = optional_weight(data["cls_weights"])
    if loss_type == "abce":
        base, params = "ce", None
    elif loss_type == "abldam":
        base, params = "ldam", {"max_margin": 0.5, "scale": 30.0}
    else:
        raise AssertionError(f"unknown ABSGD loss_type {loss_type!r}")
    return ABSGDLoss(
        base=base,
        base_params=params,
        class_counts=counts,
        lam=float(data["myLambda"]),
        gamma=float(data["drogamma"]),
        alpha=float(data["abAlpha"]),
        mode=mode,
        weight=None if weight is None else torch.as_tensor(weight),
    )


def _rel_close(actual: torch.Tensor, expected: np.ndarray, rtol: float, what: str) -> None:
    """Relative comparison; the absolute floor scales with the array's magnitude (ABSGD spans 1e-10..1e2)."""
    scale = float(np.max(np.abs(expected))) if np.size(expected) else 0.0
    close(actual, expected, rtol=rtol, atol=rtol * 1e-2 * scale + 1e-300, what=what)


def check_absgd(data: dict[str, np.ndarray]) -> None:
    steps = data["logits"].shape[0]
    for mode in ("stable", "official"):
        for dtype, suffix, rtol in ((torch.float64, "", 1e-10), (torch.float32, "_f32", 1e-5)):
            if f"loss{suffix}" not in data:
                continue
            crit = _absgd_criterion(data, mode)
            for t in range(steps):
                logits = torch.tensor(data["logits"][t], dtype=dtype, requires_grad=True)
                target = long(data["targets"][t])
                loss = crit(logits, target)
                (grad,) = torch.autograd.grad(loss, logits)
                tag = f"{mode} {dtype} step {t}"
                _rel_close(loss, data[f"loss{suffix}"][t], rtol, f"loss ({tag})")
                if f"grad{suffix}" in data:
                    _rel_close(grad, data[f"grad{suffix}"][t], rtol, f"grad ({tag})")
                if f"u{suffix}" in data:
                    _rel_close(crit.u, data[f"u{suffix}"][t], rtol, f"u ({tag})")
                if suffix == "":
                    b = logits.shape[0]
                    p = crit.last_weights if crit.last_weights is not None else torch.full((b,), 1.0 / b)
                    _rel_close(p, data["p"][t], rtol, f"p ({tag})")
                    base = crit.per_sample_loss(logits.detach(), target)
                    _rel_close(base, data["per_sample_base_loss"][t], rtol, f"per_sample_base_loss ({tag})")


CHECKERS = {"cdb": check_cdb, "absgd": check_absgd}
