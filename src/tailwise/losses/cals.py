r"""CALS loss module with its class-wise augmented-Lagrangian multipliers (Liu et al., CVPR 2023).

Bingyuan Liu, Jérôme Rony, Adrian Galdran, Jose Dolz, Ismail Ben Ayed, "Class Adaptive Network
Calibration", CVPR 2023 (arXiv 2211.15088); official code ``by-liu/CALS``
(``calibrate/lagrangian/aug_lagrangian_class.py``, ``AugLagrangianClass``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from tailwise._validation import (
    check_finite,
    check_in_choices,
    check_logits_target,
    check_positive,
    check_reduction,
    checked_by_computation,
    describe,
)
from tailwise.functional._prepared import PreparedLosses
from tailwise.functional.cals import (
    CALS_PENALTIES,
    cals_constraints,
    cals_fn,
    cals_validation_stats,
)
from tailwise.functional.ce import _LOW_PRECISION
from tailwise.registry import LOSSES

__all__ = ["CALSLoss"]


def _check_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {describe(value)}")
    return int(value)


@LOSSES.register("cals")
class CALSLoss(nn.Module):
    r"""Class Adaptive Label Smoothing: cross-entropy plus a class-wise augmented-Lagrangian penalty.

    Training loss (see :func:`tailwise.functional.cals_loss`):

    .. math::

        L = \mathrm{CE}(z, y) + \frac{1}{NC}\sum_{i,j} P(h_{ij}; \lambda_j, \rho_j), \qquad
        h_{ij} = \frac{\max_k z_{ik} - z_{ij} - m}{m}.

    The multipliers :math:`\lambda` and penalty parameters :math:`\rho` (one per class, float
    buffers saved by ``state_dict``) are constants during an epoch. After every epoch the trainer calls
    :meth:`update_from_validation` with the whole validation split, which runs the official sequence
    ``reset_update_lambd → update_lambd → set_lambd → update_rho``:

    * :math:`\lambda_j \leftarrow \mathrm{clip}\bigl(\frac1n\sum_i \mathrm{clip}(P'(h_{ij};
      \lambda_j, \rho_j), \lambda_{\min}, \lambda_{\max}), \lambda_{\min}, \lambda_{\max}\bigr)` when
      ``(epoch + 1) % lambd_step == 0``, each derivative clipped before averaging. The mean is over the
      validation samples at fixed :math:`(\lambda, \rho)`, so batching does not change it (up to
      summation order); :meth:`update_lambd` can also be called batch by batch, as the official
      trainer does.
    * with :math:`\bar c_j` the mean of :math:`h_{ij}` over the validation samples: when
      ``rho_step > 0`` and ``(epoch + 1) % rho_step == 0`` and a previous value exists,
      :math:`\rho_j \leftarrow \mathrm{clip}(\gamma\rho_j, \rho_{\min}, \rho_{\max})` for the classes
      with :math:`\bar c_j > \tau\max(\bar c_j^{\,prev}, 0)`. The previous value is refreshed every
      epoch (whenever ``rho_step > 0``), so the comparison is always with the preceding epoch.

    Initially :math:`\lambda_j = \lambda_{\min}` and :math:`\rho_j = \rho_{\min}`.

    **Distributed training.** When a process group is initialised (and ``sync_dist`` is true), the
    validation accumulators (sum of clipped derivatives, sum of constraints, sample count) are
    summed over ranks with ``all_reduce`` before the update, so every rank ends with the multipliers of
    the union of the ranks' validation logits. If every rank passes the same (already gathered)
    split, the mean is unchanged, so the sync is safe either way. The official code instead averages
    the per-rank means, which equals the union mean when the shards have equal sizes.

    Args:
        num_classes: number of classes :math:`C`.
        margin: margin :math:`m` (the official README commands use 10; the yaml default is 20).
        penalty: ``'phr'`` (default), ``'p2'``, ``'p3'`` or ``'relu'``.
        lambd_min: lower clip of the multipliers and their initial value (1e-6).
        lambd_max: upper clip of the multipliers (1e6).
        lambd_step: update :math:`\lambda` every ``lambd_step`` epochs (1).
        rho_min: lower clip of :math:`\rho` and its initial value (1).
        rho_max: upper clip of :math:`\rho` (10).
        rho_step: update :math:`\rho` every ``rho_step`` epochs; ``<= 0`` never (config: 10).
        gamma: growth factor of :math:`\rho` (1.2).
        tao: required relative decrease of the mean constraint (0.9).
        normalize: :math:`h = (d - m)/m` instead of :math:`d - m` (True).
        weight: optional per-class weights of the cross-entropy term.
        reduction: ``'none' | 'mean' | 'sum'``.
        sync_dist: all-reduce the validation accumulators under an initialised process group.
        state_dtype: dtype of the multiplier buffers (float64 keeps :math:`\lambda` up to 1e6 exact;
            use float32 on devices without float64). ``.to(dtype)`` or ``.half()`` on the loss casts
            these buffers too, so move the loss with ``.to(device)`` only.
    """

    lambd: Tensor
    rho: Tensor
    prev_constraints: Tensor
    has_prev: Tensor
    curr_constraints: Tensor
    grad_p_sum: Tensor
    constraint_sum: Tensor
    sample_num: Tensor
    weight: Tensor | None

    def __init__(
        self,
        num_classes: int,
        margin: float = 10.0,
        penalty: str = "phr",
        lambd_min: float = 1e-6,
        lambd_max: float = 1e6,
        lambd_step: int = 1,
        rho_min: float = 1.0,
        rho_max: float = 10.0,
        rho_step: int = 10,
        gamma: float = 1.2,
        tao: float = 0.9,
        normalize: bool = True,
        weight: Tensor | Sequence[float] | None = None,
        reduction: str = "mean",
        sync_dist: bool = True,
        state_dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        num_classes = _check_int("num_classes", num_classes)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}")
        self.num_classes = num_classes
        self.margin = check_positive("margin", margin)
        self.penalty = check_in_choices("penalty", penalty, tuple(CALS_PENALTIES))
        self.lambd_min = check_positive("lambd_min", lambd_min, allow_zero=True)
        self.lambd_max = check_positive("lambd_max", lambd_max)
        if self.lambd_max < self.lambd_min:
            raise ValueError(f"lambd_max must be >= lambd_min ({self.lambd_min}); got {lambd_max!r}")
        self.lambd_step = _check_int("lambd_step", lambd_step)
        if self.lambd_step < 1:
            raise ValueError(f"lambd_step must be >= 1; got {lambd_step!r}")
        self.rho_min = check_positive("rho_min", rho_min)
        self.rho_max = check_positive("rho_max", rho_max)
        if self.rho_max < self.rho_min:
            raise ValueError(f"rho_max must be >= rho_min ({self.rho_min}); got {rho_max!r}")
        self.rho_step = _check_int("rho_step", rho_step)
        self.gamma = check_positive("gamma", gamma)
        self.tao = check_positive("tao", tao, allow_zero=True)
        self.normalize = bool(normalize)
        self.reduction = check_reduction(reduction)
        self.sync_dist = bool(sync_dist)
        if not (isinstance(state_dtype, torch.dtype) and state_dtype.is_floating_point):
            raise TypeError(f"state_dtype must be a floating-point torch.dtype; got {describe(state_dtype)}")

        c = num_classes
        self.register_buffer("lambd", torch.full((c,), self.lambd_min, dtype=state_dtype))
        self.register_buffer("rho", torch.full((c,), self.rho_min, dtype=state_dtype))
        self.register_buffer("prev_constraints", torch.zeros(c, dtype=state_dtype))
        self.register_buffer("has_prev", torch.zeros((), dtype=torch.bool))
        self.register_buffer("curr_constraints", torch.zeros(c, dtype=state_dtype))
        self.register_buffer("grad_p_sum", torch.zeros(c, dtype=state_dtype))
        self.register_buffer("constraint_sum", torch.zeros(c, dtype=state_dtype))
        self.register_buffer("sample_num", torch.zeros((), dtype=torch.int64))
        self._finalized = False
        w = None
        if weight is not None:
            w = weight.detach().clone() if isinstance(weight, Tensor) else torch.as_tensor(np.asarray(weight, dtype=np.float64))
            if w.shape != (c,):
                raise ValueError(f"weight must be a 1-D tensor with {c} entries (one per class); got {describe(weight)}")
        self.register_buffer("weight", w)
        self._prepared = PreparedLosses(maxsize=1)  # the prepared loss of the current state

    # ------------------------------------------------------------------ training
    def set_weight(self, weight: Tensor | Sequence[float] | None) -> None:
        """Replace the per-class weight of the cross-entropy term (``None`` removes it)."""
        if weight is None:
            self.weight = None
            return
        w = weight.detach().clone() if isinstance(weight, Tensor) else torch.as_tensor(np.asarray(weight, dtype=np.float64))
        if w.shape != (self.num_classes,):
            raise ValueError(f"weight must be a 1-D tensor with {self.num_classes} entries (one per class); got {describe(weight)}")
        self.weight = w.to(self.lambd.device)

    def constraints(self, logits: Tensor) -> Tensor:
        """The ``[N, C]`` constraint values :math:`h` of ``logits``."""
        return cals_constraints(logits, self.margin, self.normalize)

    def penalty_value(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(penalty, constraint)`` as the official ``get``: mean of :math:`P(h)` and mean of :math:`h`."""
        h = self.constraints(logits)
        value, _ = CALS_PENALTIES[self.penalty](h, self.lambd.to(h.dtype), self.rho.to(h.dtype))
        return value.mean(), h.mean()

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy plus the CALS penalty at the current multipliers."""
        # cals_loss(logits, target, self.lambd, ...) with the same checks; the buffers (constants during
        # training) are checked and cast, and the penalty's constants derived, once per change.
        # On the CPU the labels' range and the logits' finiteness are checked by the computation (see
        # checked_by_computation); elsewhere an out-of-range index is a device-side assert, so the
        # checks come first.
        on_cpu = isinstance(logits, Tensor) and logits.is_cpu
        check_logits_target(logits, target, label_range=not on_cpu, finite=not on_cpu)
        z = logits.float() if logits.dtype in _LOW_PRECISION else logits
        buffers = self._buffers
        lambd, rho, weight = buffers["lambd"], buffers["rho"], buffers["weight"]
        margin, penalty, normalize, reduction = self.margin, self.penalty, self.normalize, self.reduction
        key = PreparedLosses.key("cals", z, lambd, rho, weight, margin, penalty, normalize, reduction)
        fn = self._prepared.get(key)
        if fn is None:
            fn = cals_fn(z, lambd, rho, margin, penalty, normalize, reduction, weight)
            self._prepared.put(key, fn, (lambd, rho, weight))
        labels = target if target.dtype == torch.int64 else target.long()
        if on_cpu:
            return checked_by_computation(fn, z, labels, logits)
        return fn(z, labels)

    # ------------------------------------------------------------------ multiplier updates
    def reset_update_lambd(self, epoch: int) -> None:
        """Zero the validation accumulators (start of a validation pass)."""
        del epoch  # the official code resets every epoch
        self.grad_p_sum.zero_()
        self.constraint_sum.zero_()
        self.sample_num.zero_()
        self._finalized = False

    @torch.no_grad()
    def update_lambd(self, logits: Tensor, epoch: int) -> None:
        """Accumulate the clipped penalty derivatives and constraints of a batch of validation logits."""
        del epoch
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits must have shape (N, {self.num_classes}); got shape {tuple(logits.shape)}"
            )
        check_finite("logits", logits)
        dtype = self.lambd.dtype
        z = logits.detach().to(device=self.lambd.device, dtype=dtype)
        g, c, n = cals_validation_stats(
            z, self.lambd, self.rho, self.margin, self.penalty, self.normalize, self.lambd_min, self.lambd_max
        )
        self.grad_p_sum += g
        self.constraint_sum += c
        self.sample_num += n
        self._finalized = False

    @torch.no_grad()
    def _finalize(self) -> None:
        """Sum the accumulators over ranks (once per pass) and compute the mean constraints."""
        if self._finalized:
            return
        if self.sync_dist and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            packed = torch.cat([self.grad_p_sum, self.constraint_sum, self.sample_num.to(self.grad_p_sum.dtype).reshape(1)])
            device = packed.device
            if dist.get_backend() == "nccl" and device.type == "cpu":
                packed = packed.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(packed, op=dist.ReduceOp.SUM)
            packed = packed.to(device)
            c = self.num_classes
            self.grad_p_sum.copy_(packed[:c])
            self.constraint_sum.copy_(packed[c : 2 * c])
            self.sample_num.fill_(round(float(packed[2 * c])))
        n = int(self.sample_num)
        if n == 0:
            raise ValueError("CALS multiplier update needs validation logits; got 0 samples (call update_lambd first)")
        self.curr_constraints.copy_(self.constraint_sum / n)
        self._finalized = True

    @torch.no_grad()
    def set_lambd(self, epoch: int) -> None:
        """Set :math:`\\lambda` to the clipped mean of the accumulated derivatives (every ``lambd_step`` epochs)."""
        self._finalize()
        if (epoch + 1) % self.lambd_step == 0:
            mean = self.grad_p_sum / int(self.sample_num)
            self.lambd.copy_(mean.clamp(min=self.lambd_min, max=self.lambd_max))

    @torch.no_grad()
    def update_rho(self, epoch: int) -> None:
        """Grow :math:`\\rho_j` by :math:`\\gamma` for classes whose mean constraint did not decrease enough."""
        if self.rho_step <= 0:
            return
        self._finalize()
        curr = self.curr_constraints
        if (epoch + 1) % self.rho_step == 0 and bool(self.has_prev):
            grow = curr > self.tao * self.prev_constraints.clamp(min=0)
            new = torch.where(grow, self.gamma * self.rho, self.rho)
            self.rho.copy_(new.clamp(min=self.rho_min, max=self.rho_max))
        self.prev_constraints.copy_(curr)
        self.has_prev.fill_(True)

    def update_from_validation(self, logits: Tensor, target: Tensor | None, epoch: int) -> None:
        """The trainer hook: the official per-epoch update on the whole validation split.

        Args:
            logits: ``[n_val, C]`` validation logits (gathered across ranks, or this rank's shard).
            target: validation labels (unused by CALS; accepted for the hook's signature).
            epoch: the 0-indexed epoch that just ended.
        """
        del target
        self.reset_update_lambd(epoch)
        self.update_lambd(logits, epoch)
        self.set_lambd(epoch)
        self.update_rho(epoch)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, margin={self.margin}, penalty={self.penalty!r}, "
            f"lambd=[{self.lambd_min}, {self.lambd_max}], lambd_step={self.lambd_step}, "
            f"rho=[{self.rho_min}, {self.rho_max}], rho_step={self.rho_step}, gamma={self.gamma}, tao={self.tao}, "
            f"normalize={self.normalize}, reduction={self.reduction!r}"
        )
