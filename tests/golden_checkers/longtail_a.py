"""Golden checkers for DRW (``drw_*``), LDAM (``ldam_*``), the cosine head (``normedlinear_*``), the
LDAM-repo focal loss (``ldamrepo_focal_*``), VS / LA / CDT (``vs_*``), Bayias (``bayias_*``) and UniMix
(``unimix_*``).

Every value is recomputed from the stored inputs (``logits``, ``targets``, ``cls_num_list``, the
hyper-parameters, ``features``/``W``, ``images``/``partner_index``/``beta_draws``) through tailwise's
public API, in float64 against the float64 outputs and in float32 against the ``*_f32`` outputs where a
file has them. Stored outputs (``loss``, ``grad``, ``m_list``, ``weights``, ``lam`` ...) are only ever
compared against, never used as inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from golden_checkers._util import close, long, optional_weight, t32, t64
from tailwise.functional import (
    bayias_loss,
    cdt_loss,
    focal_loss,
    ldam_loss,
    ldam_margins,
    logit_adjusted_loss,
    vs_adjustments,
    vs_loss,
)
from tailwise.losses import (
    BayiasLoss,
    CDTLoss,
    CrossEntropyLoss,
    FocalLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    VSLoss,
)
from tailwise.models import NormedLinear
from tailwise.schedules import DeferredReweighting, NoReweighting, Reweighting
from tailwise.transforms import UniMix, mixed_loss, unimix_from_draws, unimix_probabilities, unimix_xi_star

F64 = {"rtol": 1e-10, "atol": 1e-12}
F32 = {"rtol": 1e-5, "atol": 1e-6}
F32_LDAM_GRAD = {"rtol": 1e-5, "atol": 2e-6}

LossFn = Callable[[torch.Tensor], torch.Tensor]


def _loss_and_grad(fn: LossFn, logits: np.ndarray, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(z)`` and ``d fn / d z`` at the stored logits in ``dtype``."""
    z = (t64 if dtype == torch.float64 else t32)(logits, requires_grad=True)
    loss = fn(z)
    (grad,) = torch.autograd.grad(loss, z)
    assert loss.dtype == dtype, f"loss dtype {loss.dtype} for {dtype} logits"
    return loss, grad


def _check_both(
    data: dict[str, np.ndarray],
    fn: Callable[[torch.Tensor, torch.dtype], torch.Tensor],
    what: str,
    grad_tol32: dict[str, float] = F32,
) -> None:
    """Compare ``fn`` (loss of logits) and its gradient with ``loss``/``grad`` and, if present, the f32 keys."""
    loss, grad = _loss_and_grad(lambda z: fn(z, torch.float64), data["logits"], torch.float64)
    close(loss, data["loss"], **F64, what=f"{what}: loss (float64)")
    close(grad, data["grad"], **F64, what=f"{what}: grad (float64)")
    if "loss_f32" in data:
        loss32, grad32 = _loss_and_grad(lambda z: fn(z, torch.float32), data["logits"], torch.float32)
        close(loss32, data["loss_f32"], **F32, what=f"{what}: loss (float32)")
        if "grad_f32" in data:
            close(grad32, data["grad_f32"], **grad_tol32, what=f"{what}: grad (float32)")


# --------------------------------------------------------------------------------------------- DRW
def check_drw(data: dict[str, np.ndarray]) -> None:
    counts = data["cls_num_list"]
    beta = float(data["beta"])
    switch = int(data["switch_epoch"])
    drw = DeferredReweighting(counts, beta=beta, switch_epoch=switch)
    for i, epoch in enumerate(np.asarray(data["epochs"]).tolist()):
        w = drw.weight(int(epoch))
        close(w, data["weights"][i], **F64, what=f"DRW weights at epoch {epoch}")
        drw.set_epoch(int(epoch))
        close(drw.weight(), data["weights"][i], **F64, what=f"DRW weights after set_epoch({epoch})")
        if "weights_f32" in data:
            close(w.float(), data["weights_f32"][i], **F32, what=f"DRW float32 weights at epoch {epoch}")
    if "reweight_rule_weights" in data:
        rw = Reweighting(counts, beta=beta)
        for epoch in (0, switch, switch + 1):
            close(rw.weight(epoch), data["reweight_rule_weights"], **F64, what=f"Reweight rule, epoch {epoch}")
    assert NoReweighting().weight(switch) is None

    weight = drw.weight(switch)  # the weighted CE of the files runs at the switch epoch

    def loss_fn(z: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        criterion = CrossEntropyLoss()
        criterion.set_weight(weight)
        return criterion(z, long(data["targets"]))

    _check_both(data, loss_fn, "DRW weighted CE")


# --------------------------------------------------------------------------------------------- LDAM
def _ldam_weight(data: dict[str, np.ndarray]) -> np.ndarray | None:
    w = optional_weight(data["weight"]) if "weight" in data else None
    if "has_weight" in data and not bool(data["has_weight"]):
        return None
    return w


def check_ldam(data: dict[str, np.ndarray]) -> None:
    counts = data["cls_num_list"]
    max_m = float(data["max_m"])
    s = float(data["s"])
    weight = _ldam_weight(data)
    if "m_list" in data:
        close(ldam_margins(counts, max_m), data["m_list"], **F64, what="LDAM margins")
    target = long(data["targets"])
    module = LDAMLoss(counts, max_margin=max_m, scale=s, weight=None if weight is None else t64(weight))
    close(module.margins, ldam_margins(counts, max_m), **F64, what="LDAMLoss.margins buffer")
    _check_both(data, lambda z, _dt: module(z, target), "LDAMLoss", F32_LDAM_GRAD)
    _check_both(
        data,
        lambda z, _dt: ldam_loss(z, target, counts, max_margin=max_m, scale=s, weight=weight),
        "ldam_loss",
        F32_LDAM_GRAD,
    )


# ------------------------------------------------------------------------------------- NormedLinear
def check_normedlinear(data: dict[str, np.ndarray]) -> None:
    features, w = data["features"], data["W"]
    in_features, num_classes = w.shape
    counts = data["cls_num_list"]
    max_m = float(data["max_m"]) if "max_m" in data else 0.5  # the official LDAMLoss defaults
    s = float(data["s"]) if "s" in data else 30.0
    target = long(data["targets"])
    cases = [
        ("float64", torch.float64, t64, F64, F64, "", ""),
        ("float32", torch.float32, t32, F32, F32_LDAM_GRAD, "_f32", "_f32"),
    ]
    for name, dtype, conv, tol_loss, tol_grad, loss_suffix, grad_suffix in cases:
        if f"loss{loss_suffix}" not in data:
            continue
        for transposed in (True, False):
            head = NormedLinear(int(in_features), int(num_classes), transposed_layout=transposed).to(dtype)
            with torch.no_grad():
                head.weight.copy_(conv(w) if transposed else conv(w).t())
            h = conv(features, requires_grad=True)
            logits = head(h)
            assert logits.dtype == dtype
            if dtype == torch.float64:
                close(logits, data["logits"], **F64, what=f"NormedLinear logits (transposed={transposed})")
            loss = LDAMLoss(counts, max_margin=max_m, scale=s)(logits, target)
            grad_h, grad_w = torch.autograd.grad(loss, [h, head.weight])
            if not transposed:
                grad_w = grad_w.t()
            tag = f"NormedLinear+LDAM {name} (transposed={transposed})"
            close(loss, data[f"loss{loss_suffix}"], **tol_loss, what=f"{tag}: loss")
            if f"grad_features{grad_suffix}" in data:
                close(grad_h, data[f"grad_features{grad_suffix}"], **tol_grad, what=f"{tag}: grad_features")
            if f"grad_W{grad_suffix}" in data:
                close(grad_w, data[f"grad_W{grad_suffix}"], **tol_grad, what=f"{tag}: grad_W")


# ------------------------------------------------------------------------------ LDAM-repo focal loss
def check_ldamrepo_focal(data: dict[str, np.ndarray]) -> None:
    gamma = float(data["gamma"])
    weight = optional_weight(data["weight"]) if "weight" in data else None
    target = long(data["targets"])
    module = FocalLoss(gamma=gamma, weight=None if weight is None else t64(weight), variant="ldam_repo")
    _check_both(data, lambda z, _dt: module(z, target), "FocalLoss(variant='ldam_repo')")
    _check_both(
        data,
        lambda z, _dt: focal_loss(z, target, gamma=gamma, weight=weight, variant="ldam_repo"),
        "focal_loss(variant='ldam_repo')",
    )


# ----------------------------------------------------------------------------------------------- VS
def check_vs(data: dict[str, np.ndarray]) -> None:
    counts = data["cls_num_list"]
    gamma = float(data["gamma"])
    tau = float(data["tau"])
    weight = optional_weight(data["weight"]) if "weight" in data else None
    target = long(data["targets"])
    delta, iota = vs_adjustments(counts, gamma, tau)
    if "Delta_list" in data:
        close(1.0 / delta, data["Delta_list"], **F64, what="VS Delta_list = (n_max/n)^gamma")
    if "iota_list" in data:
        close(iota, data["iota_list"], **F64, what="VS iota_list = tau log prior")
    w64 = None if weight is None else t64(weight)
    module = VSLoss(counts, gamma=gamma, tau=tau, weight=w64)
    _check_both(data, lambda z, _dt: module(z, target), "VSLoss")
    _check_both(data, lambda z, _dt: vs_loss(z, target, counts, gamma=gamma, tau=tau, weight=weight), "vs_loss")
    if gamma == 0.0:
        la = LogitAdjustedLoss(counts, tau=tau, weight=w64)
        _check_both(data, lambda z, _dt: la(z, target), "LogitAdjustedLoss")
        _check_both(data, lambda z, _dt: logit_adjusted_loss(z, target, counts, tau=tau, weight=weight), "logit_adjusted_loss")
    if tau == 0.0:
        cdt = CDTLoss(counts, gamma=gamma, weight=w64)
        _check_both(data, lambda z, _dt: cdt(z, target), "CDTLoss")
        _check_both(data, lambda z, _dt: cdt_loss(z, target, counts, gamma=gamma, weight=weight), "cdt_loss")


# ------------------------------------------------------------------------------------------- Bayias
def check_bayias(data: dict[str, np.ndarray]) -> None:
    counts = data["train_cls_num_list"]
    prior = data["inf_label_distribution"]
    target = long(data["targets"])
    module = BayiasLoss(counts, target_prior=prior)
    _check_both(data, lambda z, _dt: module(z, target), "BayiasLoss")
    _check_both(data, lambda z, _dt: bayias_loss(z, target, counts, target_prior=prior), "bayias_loss")
    if np.allclose(prior, prior.flat[0]):  # a uniform target prior is the default
        _check_both(data, lambda z, _dt: BayiasLoss(counts)(z, target), "BayiasLoss(target_prior=None)")
    for suffix, conv, tol in (("", t64, F64), ("_f32", t32, F32)):
        key = f"per_sample_loss{suffix}"
        if key in data:
            per = bayias_loss(conv(data["logits"]), target, counts, target_prior=prior, reduction="none")
            close(per, data[key], **tol, what=f"Bayias {key}")


# ------------------------------------------------------------------------------------------- UniMix
def check_unimix(data: dict[str, np.ndarray]) -> None:
    counts = data["cls_num_list"]
    tau = float(data["tau"])
    alpha = float(data["alpha"])
    labels = long(data["labels"])
    partner = long(data["partner_index"])
    draws = t64(data["beta_draws"])
    if "sampler_p" in data:
        close(unimix_probabilities(labels, counts, tau), data["sampler_p"], **F64, what="UniMix sampler_p")
    target = long(data["targets"]) if "targets" in data else None
    assert target is None or torch.equal(target, labels)

    for suffix, dtype, conv, tol, grad_tol in (("", torch.float64, t64, F64, F64), ("_f32", torch.float32, t32, F32, F32)):
        if f"loss{suffix}" not in data:
            continue
        x_mix, y_a, y_b, lam = unimix_from_draws(conv(data["images"]), labels, counts, partner, draws)
        what = f"UniMix ({dtype})"
        if "labels_1" in data:
            np.testing.assert_array_equal(y_a.numpy(), data["labels_1"], err_msg=f"{what}: labels_1")
        if "labels_2" in data:
            np.testing.assert_array_equal(y_b.numpy(), data["labels_2"], err_msg=f"{what}: labels_2")
        if f"xi_star{suffix}" in data:
            close(unimix_xi_star(y_a, y_b, counts), data[f"xi_star{suffix}"], **tol, what=f"{what}: xi_star")
        if f"lam{suffix}" in data:
            close(lam, data[f"lam{suffix}"], **tol, what=f"{what}: lam")
        if f"mixed_images{suffix}" in data:
            close(x_mix, data[f"mixed_images{suffix}"], **tol, what=f"{what}: mixed_images")
        criterion = BayiasLoss(counts, reduction="none")

        def objective(z: torch.Tensor, c: BayiasLoss = criterion, ya: torch.Tensor = y_a, yb: torch.Tensor = y_b,
                      lm: torch.Tensor = lam) -> torch.Tensor:
            return mixed_loss(c, z, ya, yb, lm)

        loss, grad = _loss_and_grad(objective, data["logits"], dtype)
        close(loss, data[f"loss{suffix}"], **tol, what=f"{what}: loss")
        if f"grad{suffix}" in data:
            close(grad, data[f"grad{suffix}"], **grad_tol, what=f"{what}: grad")

    # the module draws from a generator reproducibly and keeps the labels it was given
    mix = UniMix(counts, alpha=alpha, tau=tau)
    x = t64(data["images"])
    out1 = mix(x, labels, generator=torch.Generator().manual_seed(0))
    out2 = mix(x, labels, generator=torch.Generator().manual_seed(0))
    for a, b in zip(out1, out2):
        assert torch.equal(a, b), "UniMix is not reproducible for a fixed generator seed"
    assert torch.equal(out1[1], labels)
    assert bool(((out1[3] >= 0) & (out1[3] <= 1)).all())


CHECKERS = {
    "drw": check_drw,
    "ldam": check_ldam,
    "normedlinear": check_normedlinear,
    "ldamrepo_focal": check_ldamrepo_focal,
    "vs": check_vs,
    "bayias": check_bayias,
    "unimix": check_unimix,
}
