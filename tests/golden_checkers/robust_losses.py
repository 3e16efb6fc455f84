"""Golden checkers: LogitClip, alpha-loss, CALS and susceptibility (see the goldens README, robust part).

Every checker recomputes the stored outputs from the stored inputs through tailwise's public API.
Hyperparameters are read from the file when present and fall back to the README's documented
defaults otherwise; shapes and epoch counts come from the arrays.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

from golden_checkers._util import close, long, t64
from tailwise.functional import (
    CALS_PENALTIES,
    alpha_loss,
    clip_logits,
    susceptibility_probe,
    susceptibility_zeta,
)
from tailwise.losses import AlphaLoss, CALSLoss, LogitClipLoss
from tailwise.metrics import SusceptibilityTracker


def _scalar(data: dict[str, np.ndarray], key: str, default: float | int | bool | str) -> float | int | bool | str:
    if key not in data:
        return default
    value = np.asarray(data[key])
    if isinstance(default, str):
        return str(value)
    if isinstance(default, bool):
        return bool(value)
    if isinstance(default, int):
        return int(value)
    return float(value)


# --------------------------------------------------------------------------- LogitClip
def check_logitclip(data: dict[str, np.ndarray]) -> None:
    """Official rule (threshold tau, target norm 1/tau) then mean CE; loss, grad and clipped logits."""
    tau = float(_scalar(data, "temp", 1.0))
    p = float(_scalar(data, "lp", 2))
    targets = long(data["targets"])

    logits = t64(data["logits"], requires_grad=True)
    clipped = clip_logits(logits, tau, p=p, mode="official")
    close(clipped, data["clipped_logits"], what="clipped_logits")

    # The documented intermediates: the norm plus 1e-7 and the mask of rescaled rows.
    with torch.no_grad():
        norms = torch.linalg.vector_norm(t64(data["logits"]), ord=p, dim=1) + 1e-7
    if "norms_plus_eps" in data:
        close(norms, data["norms_plus_eps"], what="norms_plus_eps")
    if "clip_mask" in data:
        np.testing.assert_array_equal((norms > tau).numpy(), np.asarray(data["clip_mask"], dtype=bool))

    loss_fn = LogitClipLoss(nn.CrossEntropyLoss(), tau=tau, p=p, mode="official")
    loss = loss_fn(logits, targets)
    loss.backward()
    close(loss, data["loss"], what="loss")
    close(logits.grad, data["grad_logits"], what="grad_logits")

    # The same through tailwise's exact cross-entropy (alpha-loss at alpha = 1).
    logits2 = t64(data["logits"], requires_grad=True)
    loss2 = LogitClipLoss(AlphaLoss(alpha=1.0), tau=tau, p=p, mode="official")(logits2, targets)
    loss2.backward()
    close(loss2, data["loss"], what="loss (AlphaLoss(1) base)")
    close(logits2.grad, data["grad_logits"], what="grad_logits (AlphaLoss(1) base)")


# --------------------------------------------------------------------------- alpha-loss
def check_alpha_loss(data: dict[str, np.ndarray]) -> None:
    """Official numerics (float32 alpha, +1e-8 at alpha = 1), mean reduction; rtol 1e-6."""
    transform = str(_scalar(data, "transform", "none"))
    raw = t64(data["raw_network_output"]) if "raw_network_output" in data else None
    targets = long(data["targets"])
    if "target_onehot" in data:
        onehot = t64(data["target_onehot"])
    else:
        onehot = torch.nn.functional.one_hot(targets, int(data["model_output_fed_to_loss"].shape[1])).double()
    official_sigmoid = transform == "sigmoid"
    if transform not in ("none", "sigmoid"):
        raise AssertionError(f"unknown alpha-loss transform {transform!r}")

    # The tensor the official loss received: the raw scores, or their sigmoid.
    if raw is not None:
        fed = torch.sigmoid(raw) if official_sigmoid else raw.clone()
        if "model_output_fed_to_loss" in data:
            close(fed, data["model_output_fed_to_loss"], what="model output fed to the loss")
    else:
        fed = t64(data["model_output_fed_to_loss"])

    alphas = np.atleast_1d(np.asarray(data["alphas"], dtype=np.float64))
    losses = np.atleast_1d(np.asarray(data["loss"], dtype=np.float64))
    grads = np.asarray(data["grad_wrt_model_output"], dtype=np.float64).reshape(len(alphas), *fed.shape)
    for j, a in enumerate(alphas):
        for target in (targets, onehot):
            out = fed.detach().clone().requires_grad_(True)
            loss = alpha_loss(out, target, float(a), official_numerics=True)
            loss.backward()
            kind = "soft" if target.is_floating_point() else "hard"
            close(loss, losses[j], rtol=1e-6, atol=1e-10, what=f"loss alpha={a} ({kind} target)")
            close(out.grad, grads[j], rtol=1e-6, atol=1e-10, what=f"grad alpha={a} ({kind} target)")
        if raw is not None:
            # The public option that applies the official sigmoid inside the loss.
            module = AlphaLoss(alpha=float(a), official_sigmoid=official_sigmoid, official_numerics=True)
            close(module(raw, targets), losses[j], rtol=1e-6, atol=1e-10, what=f"AlphaLoss from raw scores alpha={a}")


# --------------------------------------------------------------------------- CALS
def _check_cals_penalties(data: dict[str, np.ndarray]) -> None:
    h = t64(data["h"])
    lambd = t64(data["lambd"])
    rho = t64(data["rho"])
    names = sorted({m.group(1) for k in data if (m := re.fullmatch(r"(\w+)_value", k))})
    assert names, "cals penalty file holds no <penalty>_value keys"
    for name in names:
        value, grad = CALS_PENALTIES[name](h, lambd, rho)
        close(value, data[f"{name}_value"], what=f"{name} value")
        close(grad, data[f"{name}_grad"], what=f"{name} derivative")
        # The derivative returned must also be autograd's derivative of the value.
        hh = h.clone().requires_grad_(True)
        v, _ = CALS_PENALTIES[name](hh, lambd, rho)
        v.sum().backward()
        close(hh.grad, data[f"{name}_grad"], what=f"{name} autograd derivative")


def _check_cals_dynamics(data: dict[str, np.ndarray]) -> None:
    train_logits = np.asarray(data["train_logits"], dtype=np.float64)
    epochs, _, num_classes = train_logits.shape
    kwargs = {
        "num_classes": int(_scalar(data, "num_classes", num_classes)),
        "margin": float(_scalar(data, "margin", 10.0)),
        "penalty": str(_scalar(data, "penalty_name", "phr")),
        "lambd_min": float(_scalar(data, "lambd_min", 1e-6)),
        "lambd_max": float(_scalar(data, "lambd_max", 1e6)),
        "lambd_step": int(_scalar(data, "lambd_step", 1)),
        "rho_min": float(_scalar(data, "rho_min", 1.0)),
        "rho_max": float(_scalar(data, "rho_max", 10.0)),
        "rho_step": int(_scalar(data, "rho_step", -1)),
        "gamma": float(_scalar(data, "gamma", 1.2)),
        "tao": float(_scalar(data, "tao", 0.9)),
        "normalize": bool(_scalar(data, "normalize", True)),
    }
    batched = CALSLoss(**kwargs)  # replays the official per-batch calls
    whole = CALSLoss(**kwargs)  # the trainer hook on the whole validation split
    val = np.asarray(data["val_logits"], dtype=np.float64)  # [E, n_batches, B, C]
    for e in range(epochs):
        tag = f"epoch {e}"
        if "lambd_before" in data:
            close(batched.lambd, data["lambd_before"][e], what=f"lambd_before {tag}")
        if "rho_before" in data:
            close(batched.rho, data["rho_before"][e], what=f"rho_before {tag}")

        logits = t64(train_logits[e], requires_grad=True)
        penalty, constraint = batched.penalty_value(logits)
        penalty.backward()
        close(penalty, data["penalty"][e], what=f"penalty {tag}")
        close(constraint, data["constraint"][e], what=f"constraint {tag}")
        close(logits.grad, data["grad_penalty_wrt_logits"][e], what=f"grad_penalty {tag}")

        logits = t64(train_logits[e], requires_grad=True)
        total = batched(logits, long(data["train_targets"][e]))
        total.backward()
        close(total, data["ce_plus_penalty"][e], what=f"ce_plus_penalty {tag}")
        close(logits.grad, data["grad_total_wrt_logits"][e], what=f"grad_total {tag}")

        batched.reset_update_lambd(e)
        for k in range(val.shape[1]):
            batched.update_lambd(t64(val[e, k]), e)
        batched.set_lambd(e)
        batched.update_rho(e)
        whole.update_from_validation(t64(val[e].reshape(-1, val.shape[-1])), None, e)
        for module, how in ((batched, "batched"), (whole, "whole split")):
            close(module.lambd, data["lambd_after"][e], what=f"lambd_after {tag} ({how})")
            close(module.rho, data["rho_after"][e], what=f"rho_after {tag} ({how})")
            if "curr_constraints_after" in data:
                close(module.curr_constraints, data["curr_constraints_after"][e], what=f"constraints {tag} ({how})")


def check_cals(data: dict[str, np.ndarray]) -> None:
    """``cals_0``-style penalty tables and/or ``cals_{1,2,3}``-style epoch replays."""
    ran = False
    if "h" in data:
        _check_cals_penalties(data)
        ran = True
    if "train_logits" in data:
        _check_cals_dynamics(data)
        ran = True
    assert ran, f"cals golden with unknown keys {sorted(data)}"


# --------------------------------------------------------------------------- susceptibility
class _MLP(nn.Module):
    """Linear layers ``fc1..fcK`` with ReLU between them, shaped from the stored parameters."""

    def __init__(self, shapes: list[tuple[int, int]]) -> None:
        super().__init__()
        for i, (out_f, in_f) in enumerate(shapes, start=1):
            setattr(self, f"fc{i}", nn.Linear(in_f, out_f, dtype=torch.float64))
        self.depth = len(shapes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.depth + 1):
            x = getattr(self, f"fc{i}")(x)
            if i < self.depth:
                x = torch.relu(x)
        return x


def _check_susceptibility_probe(data: dict[str, np.ndarray]) -> None:
    layers = sorted(
        {int(m.group(1)) for k in data if (m := re.fullmatch(r"param:fc(\d+)\.weight", k))}
    )
    assert layers == list(range(1, len(layers) + 1)), f"unexpected susceptibility parameters {sorted(data)}"
    model = _MLP([tuple(np.asarray(data[f"param:fc{i}.weight"]).shape) for i in layers])
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(t64(data[f"param:{name}"]))
    lr = float(_scalar(data, "lr", 0.1))
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=lr,
        momentum=float(_scalar(data, "momentum", 0.9)),
        weight_decay=float(_scalar(data, "weight_decay", 5e-4)),
    )
    buffers = {name: np.asarray(data[f"momentum_buffer:{name}"]) for name, _ in model.named_parameters()
               if f"momentum_buffer:{name}" in data}
    if any(np.any(b != 0) for b in buffers.values()):  # all zeros: no buffer yet
        for name, p in model.named_parameters():
            optimizer.state[p]["momentum_buffer"] = t64(buffers[name])
    params_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    state_before = {n: optimizer.state[p]["momentum_buffer"].clone()
                    for n, p in model.named_parameters() if "momentum_buffer" in optimizer.state[p]}

    num_classes = int(np.asarray(data[f"param:fc{layers[-1]}.weight"]).shape[0])
    before, after = susceptibility_probe(
        model, optimizer, t64(data["x"]), num_classes, labels=long(data["random_labels"])
    )
    close(before, data["loss_before"], what="loss_before")
    close(after, data["loss_after"], what="loss_after")
    if "diff" in data:
        close(before - after, data["diff"], what="diff")

    restored = all(torch.equal(params_before[n], p) for n, p in model.named_parameters()) and all(
        torch.equal(state_before[n], optimizer.state[p]["momentum_buffer"])
        for n, p in model.named_parameters() if n in state_before
    )
    assert restored, "the probe modified the real model or its optimiser"
    if "model_restored" in data:
        assert restored == bool(data["model_restored"])


def _check_susceptibility_aggregation(data: dict[str, np.ndarray]) -> None:
    tracker = SusceptibilityTracker(num_classes=2, aggregation="notebook")
    for b, a in zip(np.asarray(data["phi_before"]), np.asarray(data["phi_after"])):
        tracker.record(float(b), float(a))
    close(tracker.zeta, data["zeta_notebook"], what="zeta_notebook")
    if "zeta_epoch_axis" in data:
        np.testing.assert_array_equal(tracker.epochs.numpy(), np.asarray(data["zeta_epoch_axis"]))
    _, zeta = susceptibility_zeta(data["phi_before"], data["phi_after"], aggregation="notebook")
    close(zeta, data["zeta_notebook"], what="zeta_notebook (functional)")


def check_susceptibility(data: dict[str, np.ndarray]) -> None:
    """One-step probe files (``param:*`` keys) and notebook-aggregation files (``phi_*`` keys)."""
    ran = False
    if any(k.startswith("param:") for k in data):
        _check_susceptibility_probe(data)
        ran = True
    if "phi_before" in data and "zeta_notebook" in data:
        _check_susceptibility_aggregation(data)
        ran = True
    assert ran, f"susceptibility golden with unknown keys {sorted(data)}"


CHECKERS = {
    "logitclip": check_logitclip,
    "alpha_loss": check_alpha_loss,
    "cals": check_cals,
    "susceptibility": check_susceptibility,
}
