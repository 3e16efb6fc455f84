"""Golden checkers for the certified-robustness family: randomized smoothing, SmoothMix, l_inf-dist nets.

Every checker rebuilds the computation from the stored inputs (counts, noises, λ, parameters,
hyperparameters) through tailwise's public API and compares with the stored outputs.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
from torch import nn

from golden_checkers._util import close, long, t64
from tailwise.certify import (
    ABSTAIN,
    SmoothMixLoss,
    certified_from_worst,
    certify_from_counts,
    predict_from_counts,
)
from tailwise.layers import LpDistConv2d, LpDistLinear, bound_inf_dist, lp_distance
from tailwise.losses import LinfCrossEntropyLoss, LinfHingeLoss, LinfMixtureLoss, linf_schedule
from tailwise.models import LinfDistMLP

Data = dict[str, np.ndarray]


def _scalar(data: Data, key: str, default: float | None = None) -> float | None:
    if key not in data:
        return default
    return float(np.asarray(data[key]).reshape(-1)[0])


# ---------------------------------------------------------------------------------------------------
# Cohen et al. certification
# ---------------------------------------------------------------------------------------------------


def check_cohen_certify(data: Data) -> None:
    if "abstain_value" in data:
        assert int(data["abstain_value"]) == ABSTAIN
    n = int(data["n"])
    alpha = float(data["alpha"])
    sigma = float(data["sigma"])
    sel = np.atleast_2d(data["counts_selection"])
    est = np.atleast_2d(data["counts_estimation"])
    preds, radii, lowers, counts = [], [], [], []
    for r in range(sel.shape[0]):
        cert = certify_from_counts(sel[r], est[r], n, alpha, sigma)
        preds.append(cert.prediction)
        radii.append(cert.radius)
        lowers.append(cert.p_lower)
        counts.append(cert.count)
    if "nA" in data:
        np.testing.assert_array_equal(np.array(counts), data["nA"], err_msg="nA")
    if "pA_lower" in data:
        close(np.array(lowers), data["pA_lower"], what="pA_lower")
    np.testing.assert_array_equal(np.array(preds), data["prediction"], err_msg="prediction")
    close(np.array(radii), data["radius"], what="radius")
    if "predict_counts" in data:
        pc = np.atleast_2d(data["predict_counts"])
        results = [predict_from_counts(pc[r], alpha) for r in range(pc.shape[0])]
        np.testing.assert_array_equal(np.array([p.prediction for p in results]), data["predict_prediction"], err_msg="predict")
        if "predict_pvalue" in data:
            close(np.array([p.pvalue for p in results]), data["predict_pvalue"], rtol=1e-9, what="predict_pvalue")


# ---------------------------------------------------------------------------------------------------
# SmoothMix
# ---------------------------------------------------------------------------------------------------


def _smoothmix_model(data: Data) -> nn.Sequential:
    w1, w2 = data["W1"], data["W2"]
    model = nn.Sequential(nn.Flatten(1), nn.Linear(w1.shape[1], w1.shape[0]), nn.Tanh(), nn.Linear(w2.shape[1], w2.shape[0]))
    model = model.double()
    with torch.no_grad():
        model[1].weight.copy_(t64(w1))
        model[1].bias.copy_(t64(data["b1"]))
        model[3].weight.copy_(t64(w2))
        model[3].bias.copy_(t64(data["b2"]))
    return model


def check_smoothmix(data: Data) -> None:
    model = _smoothmix_model(data)
    noises = t64(data["noises"])
    maxnorm = _scalar(data, "maxnorm")
    maxnorm = None if maxnorm is None or math.isnan(maxnorm) else maxnorm
    maxnorm_s = _scalar(data, "maxnorm_s")
    maxnorm_s = None if maxnorm_s is None or math.isnan(maxnorm_s) else maxnorm_s
    loss_fn = SmoothMixLoss(
        sigma=float(data["sigma"]),
        num_noises=int(data.get("m", noises.shape[0])),
        num_steps=int(data["T"]),
        alpha=float(data["alpha"]),
        mix_step=int(data["mix_step"]),
        eta=float(data["eta"]),
        maxnorm=maxnorm,
        maxnorm_s=maxnorm_s,
        detach_target=bool(_scalar(data, "detach_target", 0.0)),
    )
    x = t64(data["inputs"])
    y = long(data["targets"])
    loss, parts = loss_fn(
        model, x, y, noises=noises, lam=t64(data["lam"]), warmup=float(_scalar(data, "warmup_v", 1.0)), return_parts=True
    )
    for key in ("x_init", "x_adv", "clean_avg_softmax", "mixed_inputs", "mixed_targets", "loss_xent", "loss_mixup", "ind_correct"):
        if key in data:
            close(parts[key], data[key], what=key)
    close(loss, data["loss"], what="loss")
    loss.backward()
    grads = {"grad_W1": model[1].weight.grad, "grad_b1": model[1].bias.grad, "grad_W2": model[3].weight.grad, "grad_b2": model[3].bias.grad}
    for key, grad in grads.items():
        if key in data:
            close(grad, data[key], what=key)


# ---------------------------------------------------------------------------------------------------
# l_inf-dist nets
# ---------------------------------------------------------------------------------------------------


def _cases(data: Data, required: tuple[str, ...]) -> list[str]:
    names = sorted({k.rsplit("/", 1)[0] for k in data if "/" in k})
    return [c for c in names if all(f"{c}/{r}" in data for r in required)]


def _check_raw_distances(data: Data) -> None:
    for c in _cases(data, ("x", "w", "y")):
        x = t64(data[f"{c}/x"], requires_grad=True)
        w = t64(data[f"{c}/w"], requires_grad=True)
        p = float(_scalar(data, f"{c}/p", math.inf))
        groups = int(_scalar(data, f"{c}/groups", 1))
        y = lp_distance(x, w, p, groups)
        close(y, data[f"{c}/y"], what=f"{c}/y")
        if f"{c}/upstream_grad" in data:
            y.backward(t64(data[f"{c}/upstream_grad"]))
            close(x.grad, data[f"{c}/grad_x"], what=f"{c}/grad_x")
            close(w.grad, data[f"{c}/grad_w"], what=f"{c}/grad_w")


def _check_identity_positions(layer: nn.Module, stored: np.ndarray, identity_val: float | None) -> None:
    """The identity init puts −identity_val where the stored (initialised) weight has it."""
    if identity_val is None:
        return
    ours = layer.weight.detach().numpy() == -identity_val
    theirs = stored == -identity_val
    np.testing.assert_array_equal(ours, theirs, err_msg="identity initialisation positions")


def _check_layers(data: Data) -> None:
    for c in _cases(data, ("weight", "x")):
        x = t64(data[f"{c}/x"])
        weight = data[f"{c}/weight"]
        bias = f"{c}/bias" in data
        mean_shift = bool(_scalar(data, f"{c}/mean_shift", 1.0))
        identity_val = _scalar(data, f"{c}/identity_val", 10.0)
        p = float(_scalar(data, f"{c}/p", math.inf))
        groups = int(_scalar(data, f"{c}/groups", 1))
        if x.ndim == 4:
            layer: nn.Module = LpDistConv2d(
                x.shape[1],
                weight.shape[0],
                kernel_size=int(_scalar(data, f"{c}/kernel_size", 3)),
                stride=int(_scalar(data, f"{c}/stride", 1)),
                padding=int(_scalar(data, f"{c}/padding", 0)),
                bias=bias,
                mean_shift=mean_shift,
                identity_val=identity_val,
                p=p,
                groups=groups,
            ).double()
        else:
            layer = LpDistLinear(
                x.shape[1], weight.shape[0], bias=bias, mean_shift=mean_shift, identity_val=identity_val, p=p, groups=groups
            ).double()
        _check_identity_positions(layer, weight, identity_val)
        with torch.no_grad():
            layer.weight.copy_(t64(weight))
            if bias:
                layer.bias.copy_(t64(data[f"{c}/bias"]))
        layer.train()
        if f"{c}/y_train" in data:
            close(layer(x), data[f"{c}/y_train"], what=f"{c}/y_train")
        for key in (f"{c}/running_mean_after_one_train_step", f"{c}/running_mean"):
            if key in data:
                close(layer.mean_shift.running_mean, data[key], what=key)
        layer.eval()
        with torch.no_grad():
            if f"{c}/y_eval" in data:
                close(layer(x), data[f"{c}/y_eval"], what=f"{c}/y_eval")
            if f"{c}/lower_in" in data:
                _, lo, up = layer(x, t64(data[f"{c}/lower_in"]), t64(data[f"{c}/upper_in"]))
                close(lo, data[f"{c}/y_lower"], what=f"{c}/y_lower")
                close(up, data[f"{c}/y_upper"], what=f"{c}/y_upper")
    for c in _cases(data, ("x_lower", "x_upper", "w")):
        groups = int(_scalar(data, f"{c}/groups", 1))
        lo, up = bound_inf_dist(t64(data[f"{c}/x_lower"]), t64(data[f"{c}/x_upper"]), t64(data[f"{c}/w"]), groups)
        close(lo, data[f"{c}/y_lower"], what=f"{c}/y_lower")
        close(up, data[f"{c}/y_upper"], what=f"{c}/y_upper")


def _spec_value(spec: str, name: str) -> str | None:
    m = re.search(rf"{name}\s*=\s*(\[[^\]]*\]|[^,)]+)", spec)
    return None if m is None else m.group(1).strip()


def _build_linf_model(data: Data) -> LinfDistMLP:
    spec = str(data.get("model_spec", ""))
    weights = sorted(
        (k for k in data if re.fullmatch(r"param:fc_dist\.\d+\.weight", k)), key=lambda k: int(k.split(".")[1])
    )
    depth = len(weights)
    width = data[weights[0]].shape[0]
    num_classes = data[weights[-1]].shape[0]
    x = data["x_normalized"]
    input_dim = list(x.shape[1:])
    iv = _spec_value(spec, "identity_val")
    identity_val = None if iv in ("None",) else float(iv) if iv is not None else 10.0
    sc = _spec_value(spec, "scalar")
    scalar = "param:scalar" in data if sc is None else sc == "True"
    model = LinfDistMLP(depth, width, input_dim, num_classes, identity_val=identity_val, scalar=scalar).double()
    state = model.state_dict()
    for name in state:
        key = f"param:{name}" if f"param:{name}" in data else f"buffer:{name}"
        if key in data:
            state[name] = t64(data[key]).view_as(state[name])
    model.load_state_dict(state)
    return model


def _buffers(data: Data) -> dict[str, torch.Tensor]:
    return {k[len("buffer:") :]: t64(v) for k, v in data.items() if k.startswith("buffer:")}


def _loss_from_name(name: str, data: Data) -> nn.Module:
    def token(prefix: str) -> float | None:
        m = re.search(rf"{prefix}([0-9.eE+-]+?)(?:_|$)", name)
        return None if m is None else float(m.group(1))

    base = f"loss/{name}"
    if name.startswith("mixture"):
        lam0 = _scalar(data, f"{base}/lam0", _scalar(data, "lam0", token("lam") if token("lam") is not None else 0.1))
        lam_end = _scalar(data, f"{base}/lam_end", _scalar(data, "lam_end", 0.0005))
        clip = _scalar(data, f"{base}/clip", token("clip") if token("clip") is not None else 1.0)
        loss = LinfMixtureLoss(lam0, lam_end, clip)
        ratio = _scalar(data, f"{base}/ratio", token("ratio"))
        if ratio is not None:
            loss.update(ratio)
        return loss
    if name.startswith("hinge"):
        return LinfHingeLoss(_scalar(data, f"{base}/mix", token("mix") if token("mix") is not None else 0.25))
    if name.startswith("crossentropy"):
        return LinfCrossEntropyLoss(_scalar(data, f"{base}/mix", token("mix") if token("mix") is not None else 0.0))
    raise AssertionError(f"unknown loss case {name!r}")


def _check_model(data: Data) -> None:
    model = _build_linf_model(data)
    stored_buffers = _buffers(data)
    x = t64(data["x_normalized"])
    if "x_pixels" in data and "mean" in data:
        close((t64(data["x_pixels"]) - float(data["mean"])) / float(data["std"]), data["x_normalized"], what="x_normalized")
    y = long(data["targets"])
    eps_train = float(data["eps_train_normalized"])

    # Train mode at p_train: logits, worst, objectives and their gradients.
    model.set_p(float(_scalar(data, "p_train", 8.0)))
    model.train()
    outputs, worst = model(x, y, eps_train)
    close(outputs, data["outputs_train"], what="outputs_train")
    close(worst, data["worst_train"], what="worst_train")
    loss_names = sorted({k[len("loss/") :].split("/")[0] for k in data if k.startswith("loss/")})
    first_mixture: nn.Module | None = None
    for name in loss_names:
        loss_fn = _loss_from_name(name, data)
        if f"loss/{name}/lam" in data:
            close(loss_fn.lam, data[f"loss/{name}/lam"], what=f"loss/{name}/lam")
        if isinstance(loss_fn, LinfMixtureLoss) and "ratio" not in name and first_mixture is None:
            first_mixture = loss_fn
        o = outputs.detach().clone().requires_grad_(True)
        w = worst.detach().clone().requires_grad_(True)
        value = loss_fn(o, w, y)
        close(value, data[f"loss/{name}"], what=f"loss/{name}")
        value.backward()
        if f"loss/{name}/grad_outputs" in data:
            for leaf, key in ((o, "grad_outputs"), (w, "grad_worst")):
                grad = torch.zeros_like(leaf) if leaf.grad is None else leaf.grad
                close(grad, data[f"loss/{name}/{key}"], what=f"loss/{name}/{key}")

    if any(k.startswith("grad:") for k in data):
        assert first_mixture is not None, "parameter gradients need a mixture loss case"
        model.zero_grad()
        outputs2, worst2 = model(x, y, eps_train)
        value = first_mixture(outputs2, worst2, y)
        if "mixture_loss_second_forward" in data:
            close(value, data["mixture_loss_second_forward"], what="mixture_loss_second_forward")
        value.backward()
        for name, param in model.named_parameters():
            if f"grad:{name}" in data:
                close(param.grad.view(-1), data[f"grad:{name}"].reshape(-1), what=f"grad:{name}")

    # Eval mode at p = inf with the stored running means.
    state = model.state_dict()
    state.update({k: v.view_as(state[k]) for k, v in stored_buffers.items()})
    model.load_state_dict(state)
    model.set_p(math.inf)
    model.eval()
    eps_test = float(data["eps_test_normalized"])
    with torch.no_grad():
        logits = model(x)
        if "logits_eval" in data:
            close(logits, data["logits_eval"], what="logits_eval")
        down = _scalar(data, "down")
        up = _scalar(data, "up")
        if "worst_eval_ibp" in data:
            out_ibp, worst_ibp = model(x, y, eps_test, down, up)
            close(out_ibp, data["outputs_eval"], what="outputs_eval")
            close(worst_ibp, data["worst_eval_ibp"], what="worst_eval_ibp")
            np.testing.assert_array_equal(certified_from_worst(worst_ibp, y).numpy(), data["certified_ibp"])
        if "worst_eval_lipschitz" in data:
            _, worst_lip = model(x, y, eps_test)
            close(worst_lip, data["worst_eval_lipschitz"], what="worst_eval_lipschitz")
            np.testing.assert_array_equal(certified_from_worst(worst_lip, y).numpy(), data["certified_lipschitz"])
        if "correct" in data:
            np.testing.assert_array_equal((logits.argmax(1) == y).numpy(), data["correct"])


def _check_schedule(data: Data) -> None:
    epochs = [int(e) for e in data["epochs"]]
    lrs = [float(data["lr0"])]
    if "scalar_lr0" in data:
        lrs.append(float(data["scalar_lr0"]))
    sched = linf_schedule(
        epochs,
        int(data["batch_per_epoch"]),
        float(data["eps_train_normalized"]),
        p_start=float(_scalar(data, "p_start", 8.0)),
        p_end=float(_scalar(data, "p_end", 1000.0)),
        lr=lrs,
        lam0=_scalar(data, "lam0"),
        lam_end=_scalar(data, "lam_end"),
    )
    states = [sched(int(e), int(m)) for e, m in np.atleast_2d(data["epoch_minibatch"])]
    close([s.eps for s in states], data["eps"], what="eps")
    close([s.p for s in states], data["p"], what="p")
    if "lam" in data:
        close([s.lam for s in states], data["lam"], what="lam")
    close([s.lrs[0] for s in states], data["lr"], what="lr")
    if "lr_scalar_group" in data:
        close([s.lrs[1] for s in states], data["lr_scalar_group"], what="lr_scalar_group")


def check_linf_dist(data: Data) -> None:
    ran = False
    if _cases(data, ("x", "w", "y")):
        _check_raw_distances(data)
        ran = True
    if _cases(data, ("weight", "x")) or _cases(data, ("x_lower", "x_upper", "w")):
        _check_layers(data)
        ran = True
    if any(k.startswith("param:") for k in data):
        _check_model(data)
        ran = True
    if "epoch_minibatch" in data:
        _check_schedule(data)
        ran = True
    assert ran, f"linf_dist golden with unrecognised keys: {sorted(data)[:10]}"


CHECKERS = {
    "cohen_certify": check_cohen_certify,
    "smoothmix": check_smoothmix,
    "linf_dist": check_linf_dist,
}
