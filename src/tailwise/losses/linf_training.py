"""Training l_inf-distance nets with the trainer: the v2/v1 objectives plus the official per-minibatch schedule.

Zhang, Jiang, He, Wang, "Boosting the Certified Robustness of L-infinity Distance Nets", ICLR 2022 (v2);
Zhang, Cai, Lu, He, Wang, "Towards Certifying l-infinity Robustness using Neural Networks with l-inf-dist
Neurons", ICML 2021 (v1). Official code: zbh2047/L_inf-dist-net-v2 (``main.py``: ``mixture``, ``hinge``,
``create_schedule``).

:class:`LinfDistObjective` is a ``needs_model`` loss: the trainer calls it as ``loss(model, x, y,
generator=g)`` and it runs the :class:`tailwise.models.LinfDistMLP` itself,

.. math::

    (s z,\\ \\mathrm{worst}) = \\mathrm{model}(x, y, \\varepsilon_t), \\qquad
    L = \\ell(s z,\\ \\mathrm{worst},\\ y),

where ``worst[b, j] = (z_j − z_{y_b} + 2ε_t)/(2ε_t)`` are the Lipschitz worst-case margins (the model is
in train mode, so, as in the official code, no interval bounds are used in training) and ``ℓ`` is

* ``mixture`` (v2): ``mean_b max_j clip(worst_bj, 0, 1) + λ_t·CE(s z, y)``
  (:class:`tailwise.losses.LinfMixtureLoss`);
* ``hinge`` (v1): ``(1 − mix)·mean_b max_j [worst]_+ + mix·mean_{b,j} [worst]_+``
  (:class:`tailwise.losses.LinfHingeLoss`; the v1 repository writes it ``hinge(mix=0.75)`` with the
  weights swapped, i.e. the same loss as ``mix = 0.25`` here);
* ``crossentropy``: ``(1 − mix)·CE(worst, y) + mix·CE(s z, y)``.

Before every step the trainer calls :meth:`LinfDistObjective.on_train_step`, which applies the official
schedule (:func:`tailwise.losses.linf_schedule`, per minibatch ``(epoch, step)`` with the trainer's
``steps_per_epoch``): ``p`` of every layer (``8 → 1000`` geometrically over ``[e_p_start, e_p_end)``,
then ``∞``), ``ε_t`` (linear ramp over ``[e_eps_start, e_eps_end]``), ``λ_t`` and the cosine learning rate
``lr_g·½(1 + cos(π·t/T))`` of every optimizer parameter group ``g`` (``lr_g`` is the group's
``initial_lr``, i.e. the trainer's ``optim.lr``).

**The output scalar's learning rate.** The official optimizer is Adam with two parameter groups: the
weights at ``lr = 0.03`` and the output scalar ``s`` at ``scalar_lr = 0.006``. The trainer builds a single
group. For Adam, AdamW and SGD (with momentum) the update of a parameter is ``lr`` times a quantity that
does not depend on ``lr``, so a separate group at ``lr·ρ`` is reproduced exactly by shrinking the scalar's
last update before each step: ``s ← s_prev + ρ·(s − s_prev)`` with ``ρ = scalar_lr_ratio`` (0.2 =
0.006/0.03). This is done whenever ``s`` shares its parameter group with other parameters; with the
official two-group optimizer (your own loop) nothing is corrected and each group follows its own cosine.
The update of the very last step of a run is not shrunk (there is no later hook); it changes only the
logit scale ``s``, never a prediction or a certificate.

**Input units.** ``eps_train`` is given in pixel units (``[0, 1]`` images, e.g. 0.45 for the MNIST
``ε = 0.3`` command) and divided by ``input_std`` to give the radius in the units the model sees:

* ``data.normalize: true`` on MNIST feeds ``(x − 0.1307)/0.3081``, exactly the official
  normalisation: use ``input_std: 0.3081`` (the official code divides ``ε`` by the same std);
* CIFAR-10 in the trainer is normalised per channel (std 0.2023, 0.1994, 0.2010) where the official code
  uses one std (0.2009). A pixel ball of radius ``ε`` then has per-channel half-widths ``ε/std_c``; with
  ``input_std`` a list the smallest std is used, so the model-space cube ``ε/min_c std_c`` contains the
  pixel ball (sound, and at most 0.8% larger than the official radius);
* ``data.normalize: false``: inputs in ``[0, 1]`` and ``input_std: 1``.

During an ``ε`` ramp the first minibatch would have ``ε = 0`` (the official code then divides by zero);
here ``ε`` is floored at the ramp's first non-zero value.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tailwise._validation import check_in_choices, check_positive, describe
from tailwise.losses.linf_objectives import (
    LinfCrossEntropyLoss,
    LinfHingeLoss,
    LinfMixtureLoss,
    LinfSchedule,
    LinfScheduleState,
    linf_schedule,
)
from tailwise.registry import LOSSES

__all__ = ["LinfDistHingeObjective", "LinfDistObjective"]

OBJECTIVES = ("mixture", "hinge", "crossentropy")


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper."""
    return getattr(model, "module", model)


def _check_linf_model(model: nn.Module) -> nn.Module:
    net = _unwrap(model)
    if not (hasattr(net, "set_p") and hasattr(net, "fc_dist")):
        raise TypeError(
            "the l_inf-dist objective needs an l_inf-distance net (model: {name: linf_dist_mlp}) whose "
            f"forward(x, targets, eps) returns (logits, worst); got {type(net).__name__}"
        )
    return net


@LOSSES.register("linf_v2", "linf_dist")
class LinfDistObjective(nn.Module):
    """l_inf-distance-net training objective with the official per-minibatch schedule (``needs_model``).

    Defaults: the v2 MNIST ``ε = 0.3`` command (``command/mnist_0.3.sh``: ``mixture(lam0=0.05,
    lam_end=0.0002)``, ``--epochs 0,0,25,400,450``, ``--eps-train 0.45``, p 8 → 1000, scalar lr 0.006 with
    lr 0.03). See the module docstring for the maths, the units and the scalar learning rate.

    Args:
        objective: ``mixture`` (v2), ``hinge`` (v1) or ``crossentropy``.
        eps_train: training radius in pixel units (divided by ``input_std``).
        input_std: the std the inputs were divided by (a float, or per-channel stds whose minimum is
            used); 1 for inputs in ``[0, 1]``.
        epochs: ``(e_eps_start, e_eps_end, e_p_start, e_p_end, total)``; ``total`` should equal
            ``train.epochs`` (the cosine reaches 0 at ``total``).
        p_start: initial norm ``p``.
        p_end: norm reached at ``e_p_end`` (then ``∞`` when ``p_end ≥ 100``).
        lam0: initial CE weight of ``mixture`` (default 0.05).
        lam_end: final CE weight of ``mixture`` (default 0.0002).
        clip: hinge clip of ``mixture``.
        mix: mixing weight of ``hinge`` (default 0.25) or ``crossentropy`` (default 0).
        scalar_lr_ratio: learning rate of the output scalar over that of the weights (official
            0.006/0.03 = 0.2); applied as described in the module docstring.

    Called as ``loss(model, x, y, generator=None)``; returns the scalar loss.
    """

    needs_model = True

    def __init__(
        self,
        objective: str = "mixture",
        eps_train: float = 0.45,
        input_std: float | Sequence[float] = 1.0,
        epochs: Sequence[int] = (0, 0, 25, 400, 450),
        p_start: float = 8.0,
        p_end: float = 1000.0,
        lam0: float | None = None,
        lam_end: float | None = None,
        clip: float = 1.0,
        mix: float | None = None,
        scalar_lr_ratio: float = 0.2,
    ) -> None:
        super().__init__()
        self.objective = check_in_choices("objective", objective, OBJECTIVES)
        stds = [input_std] if isinstance(input_std, (int, float)) else list(input_std)
        if not stds:
            raise ValueError(f"input_std must be a positive number or a non-empty list; got {input_std!r}")
        self.input_std = min(check_positive("input_std", s) for s in stds)
        self.eps_train = check_positive("eps_train", eps_train)
        self.eps_model = self.eps_train / self.input_std
        self.scalar_lr_ratio = check_positive("scalar_lr_ratio", scalar_lr_ratio)
        if objective == "mixture":
            if mix is not None:
                raise ValueError("mix applies to the hinge and crossentropy objectives; got mix with objective 'mixture'")
            lam0 = 0.05 if lam0 is None else lam0
            lam_end = 0.0002 if lam_end is None else lam_end
            self.criterion: nn.Module = LinfMixtureLoss(lam0, lam_end, clip)
        else:
            if lam0 is not None or lam_end is not None:
                raise ValueError(f"lam0/lam_end apply to the mixture objective; got them with objective {objective!r}")
            if objective == "hinge":
                self.criterion = LinfHingeLoss(0.25 if mix is None else mix)
            else:
                self.criterion = LinfCrossEntropyLoss(0.0 if mix is None else mix)
        # validates epochs, p_start, p_end, lam0/lam_end (batches_per_epoch is set on the first step)
        self._template = linf_schedule(epochs, 1, self.eps_model, p_start, p_end, lr=1.0,
                                       lam0=lam0 if objective == "mixture" else None,
                                       lam_end=lam_end if objective == "mixture" else None)
        self.epochs = self._template.epochs
        self.p_start, self.p_end = self._template.p_start, self._template.p_end
        self._schedule: LinfSchedule | None = None
        self.eps = self.eps_model  # used until the first on_train_step (full radius)
        self.state: LinfScheduleState | None = None
        self.position: tuple[int, int, int] | None = None  # (epoch, step, steps_per_epoch) of the last step
        self.base_lrs: list[float] | None = None
        self._scalar_prev: Tensor | None = None
        self._warned_past_end = False

    # -- schedule -----------------------------------------------------------------------------------
    def schedule(self, steps_per_epoch: int, base_lrs: Sequence[float] = (1.0,)) -> LinfSchedule:
        """The :class:`LinfSchedule` for ``steps_per_epoch`` minibatches per epoch and these base lrs."""
        t = self._template
        return linf_schedule(self.epochs, steps_per_epoch, self.eps_model, t.p_start, t.p_end, lr=tuple(base_lrs),
                             lam0=t.lam0, lam_end=t.lam_end)

    def _ramp_floor(self, steps_per_epoch: int) -> float:
        e0, e1 = self.epochs[0], self.epochs[1]
        return self.eps_model / (steps_per_epoch * (e1 - e0)) if e1 > e0 else self.eps_model

    def on_train_step(self, epoch: int, step: int, steps_per_epoch: int, optimizer: torch.optim.Optimizer | None,
                      model: nn.Module) -> LinfScheduleState:
        """Apply the schedule at minibatch ``step`` of ``epoch``: ``p``, ``ε``, ``λ``, the learning rates and
        the scalar's learning-rate ratio. Returns the schedule state."""
        net = _check_linf_model(model)
        if optimizer is not None and self.base_lrs is None:
            self.base_lrs = [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]
        base = self.base_lrs if optimizer is not None and self.base_lrs is not None else [1.0]
        if optimizer is not None and len(base) != len(optimizer.param_groups):
            raise ValueError(f"the optimizer has {len(optimizer.param_groups)} parameter groups; the schedule was "
                             f"started with {len(base)}")
        sched = self._schedule
        if sched is None or sched.batches_per_epoch != steps_per_epoch or list(sched.lrs) != list(base):
            sched = self._schedule = self.schedule(steps_per_epoch, base)
        if epoch >= self.epochs[4] and not self._warned_past_end:
            warnings.warn(f"training epoch {epoch} is past the schedule's total of {self.epochs[4]} epochs (loss "
                          "epochs[4]); the learning rate stays 0", stacklevel=2)
            self._warned_past_end = True
        state = sched(epoch, step)
        net.set_p(state.p)
        self.eps = max(state.eps, self._ramp_floor(steps_per_epoch))
        update = getattr(self.criterion, "update", None)
        if callable(update):
            update(state.ratio_p)
        if optimizer is not None:
            self._shrink_scalar_update(net, optimizer)
            for group, lr in zip(optimizer.param_groups, state.lrs):
                group["lr"] = lr
        self.state = state
        self.position = (int(epoch), int(step), int(steps_per_epoch))
        return state

    def _shrink_scalar_update(self, net: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        scalar = getattr(net, "scalar", None)
        if not isinstance(scalar, nn.Parameter) or self.scalar_lr_ratio == 1.0:
            return
        group = next((g for g in optimizer.param_groups if any(p is scalar for p in g["params"])), None)
        if group is None or len(group["params"]) == 1:
            return  # not optimised, or already in its own group
        with torch.no_grad():
            prev = self._scalar_prev
            if prev is not None and prev.shape == scalar.shape:
                prev = prev.to(scalar.device, scalar.dtype)
                scalar.copy_(prev + self.scalar_lr_ratio * (scalar - prev))
            self._scalar_prev = scalar.detach().clone()

    # -- loss ---------------------------------------------------------------------------------------
    def forward(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Run ``model(x, y, ε_t)`` and apply the objective; ``generator`` is unused (no randomness)."""
        _check_linf_model(model)
        if not isinstance(y, Tensor) or y.shape != (x.shape[0],):
            raise ValueError(f"y must be a tensor of shape ({x.shape[0]},); got {describe(y)}")
        out = model(x, y, self.eps)
        if not isinstance(out, tuple) or len(out) != 2:
            raise TypeError(f"model(x, targets, eps) must return (logits, worst); got {describe(out)}")
        outputs, worst = out
        if outputs.dtype in (torch.float16, torch.bfloat16):
            outputs, worst = outputs.float(), worst.float()
        return self.criterion(outputs, worst, y)

    # -- state --------------------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "position": None if self.position is None else list(self.position),
            "p": None if self.state is None else self.state.p,
            "lrs": None if self.state is None else list(self.state.lrs),
            "base_lrs": self.base_lrs,
            "scalar_prev": self._scalar_prev,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.eps = float(state["eps"])
        self.position = None if state["position"] is None else tuple(int(v) for v in state["position"])  # type: ignore[assignment]
        self.base_lrs = None if state["base_lrs"] is None else [float(v) for v in state["base_lrs"]]
        prev = state.get("scalar_prev")
        self._scalar_prev = None if prev is None else prev.detach().clone()
        self._schedule = None
        self.state = None
        if self.position is not None:
            epoch, step, n = self.position
            self._schedule = self.schedule(n, self.base_lrs or [1.0])
            self.state = self._schedule(epoch, step)

    def extra_repr(self) -> str:
        p = "n/a" if self.state is None else f"{self.state.p:g}"
        return (f"objective={self.objective!r}, eps_train={self.eps_train}, input_std={self.input_std}, "
                f"eps_model={self.eps_model:.4g}, epochs={list(self.epochs)}, scalar_lr_ratio={self.scalar_lr_ratio}, "
                f"eps={self.eps:.4g}, p={p}")


@LOSSES.register("linf_v1")
class LinfDistHingeObjective(LinfDistObjective):
    """The v1 objective (hinge) with the per-minibatch schedule: :class:`LinfDistObjective` with ``objective='hinge'``.

    Defaults from the v1 MNIST command (zbh2047/L_inf-dist-net ``command/ell_inf_dist_net_mnist.sh``:
    ``hinge(mix=0.75)`` in that repository's notation = ``mix = 0.25`` here, ``--eps-train 0.45``,
    ``--epochs 0,50,0,350,400``, which in that code means: ε at its full value from the start, ``p`` from
    8 at epoch 50 to 1000 at epoch 350, 400 epochs; here ``epochs = (0, 0, 50, 350, 400)``). The v1 code
    keeps the learning rate constant for the first 50 epochs and then decays it by a cosine; here the
    cosine runs over all epochs (the v2 schedule).
    """

    def __init__(
        self,
        eps_train: float = 0.45,
        input_std: float | Sequence[float] = 1.0,
        epochs: Sequence[int] = (0, 0, 50, 350, 400),
        p_start: float = 8.0,
        p_end: float = 1000.0,
        mix: float = 0.25,
        scalar_lr_ratio: float = 0.2,
    ) -> None:
        super().__init__("hinge", eps_train, input_std, epochs, p_start, p_end, None, None, 1.0, mix, scalar_lr_ratio)
