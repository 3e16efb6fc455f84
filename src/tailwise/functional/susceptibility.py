r"""Susceptibility to noisy labels, the one-step random-label probe (Forouzesh et al., ICLR 2023).

Mahsa Forouzesh, Hanie Sedghi, Patrick Thiran, "Leveraging Unlabeled Data to Track Memorization",
ICLR 2023 (arXiv 2212.04461); official code ``mahf93/tracking-memorization``
(``experiments.py::compute_update_on_sout`` and the ``results.ipynb`` aggregation).

At every epoch :math:`t` a batch :math:`\tilde S` of unlabeled inputs gets uniformly random labels;
with :math:`\tilde\Phi` the mean cross-entropy on :math:`\tilde S`, the probe takes one step of the
training optimiser from :math:`w_t` and measures the decrease

.. math::

    r_t = \tilde\Phi(w_t) - \tilde\Phi(\tilde w_{t+1}).

The susceptibility :math:`\zeta(t)` is the running average of :math:`r_\tau` (see
:func:`susceptibility_zeta`). A network that fits random labels quickly (large :math:`\zeta`) is
memorising its noisy training labels.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tailwise._validation import check_in_choices, check_positive, describe

__all__ = ["ZETA_AGGREGATIONS", "susceptibility_probe", "susceptibility_zeta"]

ZETA_AGGREGATIONS = ("running_mean", "notebook")


def _unwrap(model: nn.Module) -> nn.Module:
    """The wrapped module of a ``DistributedDataParallel`` / ``DataParallel`` model."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


def susceptibility_probe(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x_unlabeled: Tensor,
    num_classes: int,
    generator: torch.Generator | None = None,
    criterion: Callable[[Tensor, Tensor], Tensor] | None = None,
    train_mode: bool = True,
    use_optimizer_state: bool = True,
    labels: Tensor | None = None,
    lr: float | None = None,
) -> tuple[float, float]:
    r"""One-step random-label probe: :math:`(\tilde\Phi(w_t), \tilde\Phi(\tilde w_{t+1}))`.

    Follows ``compute_update_on_sout`` of the official code:

    1. copy the model and the optimiser (the official code saves both to disk and reloads them; a
       deep copy is equivalent and leaves ``model``, its BN statistics and ``optimizer`` untouched);
    2. draw uniform labels :math:`\tilde y \in \{0..C-1\}` for ``x_unlabeled`` from ``generator``
       (or use ``labels``);
    3. :math:`\tilde\Phi(w_t)` = ``criterion(copy(x), ỹ)`` in train mode (BN uses batch statistics);
    4. one ``step()`` of the copied *training* optimiser, with its current lr, momentum buffers and
       weight decay;
    5. :math:`\tilde\Phi(\tilde w_{t+1})` on the same batch, same mode, without gradients.

    Options (not the official defaults): ``use_optimizer_state=False`` takes the step with a fresh
    ``torch.optim.SGD`` (no momentum, no weight decay) at ``lr`` (default: the first param group's
    current lr); ``train_mode=False`` probes the copy in eval mode.

    Args:
        model: the network being trained (a ``DistributedDataParallel`` wrapper is unwrapped; the probe
            runs locally on each rank).
        optimizer: its training optimiser; its params must be parameters of ``model``.
        x_unlabeled: a batch of inputs (the official code uses the first batch of 128 of a shuffled
            loader over the training images).
        num_classes: number of classes of the random labels.
        generator: source of the random labels (ignored when ``labels`` is given; ``None`` uses
            PyTorch's default generator).
        criterion: ``criterion(logits, labels)`` returning a scalar (default mean cross-entropy).
        train_mode: probe in train mode (official) or eval mode.
        use_optimizer_state: step with a copy of the training optimiser (official) or a fresh SGD.
        labels: explicit random labels ``[N]`` instead of drawing them.
        lr: learning rate of the fresh SGD step (only with ``use_optimizer_state=False``).

    Returns:
        ``(loss_before, loss_after)`` as Python floats; :math:`r_t` is their difference.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {describe(model)}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer; got {describe(optimizer)}")
    if not isinstance(x_unlabeled, Tensor) or x_unlabeled.ndim < 1 or x_unlabeled.shape[0] == 0:
        raise ValueError(f"x_unlabeled must be a non-empty batch tensor [N, ...]; got {describe(x_unlabeled)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")
    criterion = F.cross_entropy if criterion is None else criterion
    n = x_unlabeled.shape[0]
    if labels is None:
        gen_device = generator.device if generator is not None else torch.device("cpu")
        labels = torch.randint(num_classes, (n,), generator=generator, device=gen_device)
    elif not isinstance(labels, Tensor) or labels.shape != (n,) or labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor of shape ({n},); got {describe(labels)}")
    elif labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}]; got values in [{int(labels.min())}, {int(labels.max())}]")

    net = _unwrap(model)
    memo: dict[int, object] = {}
    probe_net = copy.deepcopy(net, memo)
    model_params = {id(p) for p in net.parameters()}
    if use_optimizer_state:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in model_params:
                    raise ValueError("optimizer holds parameters that are not parameters of model; pass the matching pair")
        # Deep-copying with the model's memo maps the optimiser's params and state onto the copies.
        probe_opt = copy.deepcopy(optimizer, memo)
        # An LR scheduler patches ``optimizer.step`` with a wrapper bound (by weak reference) to the
        # original optimiser. ``Optimizer.__getstate__`` drops it; an optimiser class that copies its
        # whole ``__dict__`` would keep it, so remove it to make sure the step acts on the copy.
        probe_opt.__dict__.pop("step", None)
    else:
        step_lr = float(optimizer.param_groups[0]["lr"]) if lr is None else check_positive("lr", lr)
        probe_opt = torch.optim.SGD(probe_net.parameters(), lr=step_lr, momentum=0.0, weight_decay=0.0)

    probe_net.train(train_mode)
    device = next((p.device for p in probe_net.parameters()), x_unlabeled.device)
    x = x_unlabeled.to(device)
    y = labels.to(device=device, dtype=torch.long)

    probe_net.zero_grad(set_to_none=True)
    probe_opt.zero_grad(set_to_none=True)
    loss_before = criterion(probe_net(x), y)
    loss_before.backward()
    probe_opt.step()
    with torch.no_grad():
        loss_after = criterion(probe_net(x), y)
    return float(loss_before.detach()), float(loss_after)


def susceptibility_zeta(
    loss_before: Sequence[float] | Tensor,
    loss_after: Sequence[float] | Tensor,
    aggregation: str = "running_mean",
) -> tuple[Tensor, Tensor]:
    r"""Aggregate per-epoch probes into the susceptibility curve :math:`\zeta`.

    With :math:`r_t = \tilde\Phi(w_t) - \tilde\Phi(\tilde w_{t+1})` for epochs :math:`t = 0..T-1`:

    * ``"running_mean"`` (the paper's definition): :math:`\zeta(t) = \frac{1}{t+1}\sum_{\tau=0}^{t} r_\tau`
      at every epoch :math:`t = 0..T-1`;
    * ``"notebook"`` (the official ``results.ipynb``): :math:`\zeta(t) = \frac1t\sum_{\tau=1}^{t-1} r_\tau`
      for :math:`t = 1..T-1`. It drops epoch 0 and divides by :math:`t` rather than the number of terms
      (so :math:`\zeta(1) = 0`); use it to reproduce the paper's plots.

    Args:
        loss_before: :math:`\tilde\Phi(w_t)` per epoch.
        loss_after: :math:`\tilde\Phi(\tilde w_{t+1})` per epoch.
        aggregation: ``"running_mean"`` or ``"notebook"``.

    Returns:
        ``(epochs, zeta)``: the epoch axis (int64) and the float64 values.
    """
    check_in_choices("aggregation", aggregation, ZETA_AGGREGATIONS)
    before = torch.as_tensor(loss_before, dtype=torch.float64).flatten()
    after = torch.as_tensor(loss_after, dtype=torch.float64).flatten()
    if before.shape != after.shape:
        raise ValueError(f"loss_before and loss_after must have the same length; got {before.numel()} and {after.numel()}")
    r = before - after
    t_total = r.numel()
    if aggregation == "running_mean":
        epochs = torch.arange(t_total, dtype=torch.int64)
        return epochs, torch.cumsum(r, 0) / (epochs + 1).to(torch.float64)
    epochs = torch.arange(1, max(t_total, 1), dtype=torch.int64)
    # sum_{tau=1}^{t-1} r_tau = cumsum(r)[t-1] - r[0]
    csum = torch.cumsum(r, 0)
    sums = csum[epochs - 1] - r[0] if t_total else torch.zeros(0, dtype=torch.float64)
    return epochs, sums / epochs.to(torch.float64)
