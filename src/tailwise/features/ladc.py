r"""LADC: label-aware distribution calibration of tail-class features (experimental).

Wang, Gao, Wang, Gao, Pei, Pan and Xu, "Label-Aware Distribution Calibration for Long-Tailed
Classification", IEEE TNNLS 2022 (arXiv 2111.04901). **No official code exists**; this follows the
project spec (``specs/longtail.md`` §5), modelled on Distribution Calibration (Yang, Liu and Xu,
"Free Lunch for Few-shot Learning", ICLR 2021), which LADC adapts to long-tailed data. Every choice
the spec marks unverified (U) is an option whose default is documented below.

Stage 2, on a backbone :math:`f` trained in stage 1 (frozen):

1. features :math:`h = f(x)` for all training samples (:func:`extract_features`); optionally Tukey's
   ladder :math:`h \leftarrow h^{\lambda}` for non-negative features (U; ``tukey_power``, default off);
2. per-class statistics :math:`\mu_c` and :math:`\Sigma_c` (:func:`class_statistics`; U: full covariance
   by default, ``covariance="diag"`` for per-dimension variances);
3. head / tail split by count (U; default: the 40 % most frequent classes are head, which is classes
   0-3 of CIFAR-10-LT as in the paper's Fig. 1);
4. for each tail class :math:`t`, the ``k`` most similar head classes :math:`S_t` by the similarity of
   class means (U; default cosine, as Fig. 1 reports; ``"euclidean"`` = negative distance; ``k = 2``) and
   weights :math:`a_{t,h} = \mathrm{softmax}_{h \in S_t}(\mathrm{sim}_{t,h} / T)` (U; default ``T = 1``;
   ``weighting="uniform"`` is DC's equal weights) (:func:`related_head_classes`);
5. calibration (:func:`calibrate_statistics`; U, DC form with weights):

   .. math::

       \mu'_t = \frac{\mu_t + \sum_{h \in S_t} a_{t,h}\,\mu_h}{1 + \sum_h a_{t,h}}, \qquad
       \Sigma'_t = \frac{\sum_{h \in S_t} a_{t,h}\,\Sigma_h}{\sum_h a_{t,h}} + \alpha I

   (``alpha`` default 0.2 as in DC; ``mix_own_covariance=True`` uses
   :math:`(\Sigma_t + \sum_h a_{t,h}\Sigma_h)/(1 + \sum_h a_{t,h}) + \alpha I` instead);
6. :math:`N - n_c` synthetic features per class from :math:`\mathcal N(\mu'_c, \Sigma'_c)` so that every class
   reaches :math:`N` (U; default ``target_count="max"``, the head count); head classes below :math:`N`
   are topped up from their own (uncalibrated) statistics (:func:`sample_calibrated_features`);
7. re-train the linear classifier on real + synthetic features with cross-entropy, backbone frozen
   (:func:`fit_classifier`); predict with :math:`f` followed by the new head (:meth:`LADC.predict`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tailwise._validation import check_class_counts, check_in_choices, check_positive, describe
from tailwise.class_counts import class_counts_from_labels

__all__ = [
    "LADC",
    "calibrate_statistics",
    "class_statistics",
    "extract_features",
    "fit_classifier",
    "head_class_mask",
    "related_head_classes",
    "sample_calibrated_features",
    "tukey_transform",
]

_SIMILARITIES = ("cosine", "euclidean")
_WEIGHTINGS = ("softmax", "uniform")
_COVARIANCES = ("full", "diag")


@torch.no_grad()
def extract_features(
    model: nn.Module | Callable[[Tensor], Tensor],
    x: Tensor,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> Tensor:
    """Features ``model(x)`` in evaluation mode, batch by batch, without gradients.

    Args:
        model: the frozen stage-1 backbone (returns ``(n, D)`` features, or anything flattened to that).
        x: inputs ``(N, ...)``.
        batch_size: inputs per forward pass.
        device: where to run the model (default: the inputs' device).

    Returns:
        ``(N, D)`` features on the inputs' device. The model's training flag is restored afterwards.
    """
    if not isinstance(x, Tensor) or x.ndim < 1:
        raise TypeError(f"x must be a tensor of inputs (N, ...); got {describe(x)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {describe(batch_size)}")
    was_training = model.training if isinstance(model, nn.Module) else False
    if isinstance(model, nn.Module):
        model.eval()
    try:
        parts = []
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            if device is not None:
                xb = xb.to(device)
            parts.append(model(xb).reshape(xb.shape[0], -1).to(x.device))
        if not parts:
            raise ValueError("x must hold at least one input; got an empty tensor")
        return torch.cat(parts)
    finally:
        if isinstance(model, nn.Module):
            model.train(was_training)


def tukey_transform(features: Tensor, power: float = 0.5) -> Tensor:
    r"""Tukey's ladder of powers :math:`h \mapsto h^{\lambda}` (:math:`\log h` for :math:`\lambda = 0`), for non-negative features."""
    if bool((features < 0).any()):
        raise ValueError(f"tukey_power needs non-negative features (e.g. after ReLU); got minimum {float(features.min())}")
    if power == 0:
        return torch.log(features.clamp(min=1e-12))
    return features.pow(power)


def class_statistics(
    features: Tensor, labels: Tensor, num_classes: int | None = None, covariance: str = "full"
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Per-class mean :math:`\mu_c`, covariance :math:`\Sigma_c` (unbiased) and count :math:`n_c`.

    Args:
        features: ``(N, D)`` features.
        labels: ``(N,)`` integer labels.
        num_classes: number of classes (``max(labels) + 1`` when omitted).
        covariance: ``"full"`` (``(C, D, D)``) or ``"diag"`` (per-dimension variances ``(C, D)``).

    Returns:
        ``(means (C, D), covs, counts (C,))``. Classes with fewer than 2 samples get a zero covariance,
        classes with none a zero mean.
    """
    check_in_choices("covariance", covariance, _COVARIANCES)
    if not isinstance(features, Tensor) or features.ndim != 2 or not features.is_floating_point():
        raise ValueError(f"features must be a floating (N, D) tensor; got {describe(features)}")
    if not isinstance(labels, Tensor) or labels.shape != (features.shape[0],):
        raise ValueError(f"labels must be a ({features.shape[0]},) tensor of class indices; got {describe(labels)}")
    counts = class_counts_from_labels(labels.cpu(), num_classes).to(features.device)
    c, d = counts.numel(), features.shape[1]
    labels = labels.to(features.device).long()
    sums = torch.zeros(c, d, dtype=features.dtype, device=features.device).index_add_(0, labels, features)
    means = sums / counts.clamp(min=1).unsqueeze(1).to(features.dtype)
    centred = features - means[labels]
    denom = (counts - 1).clamp(min=1).to(features.dtype)
    if covariance == "diag":
        sq = torch.zeros(c, d, dtype=features.dtype, device=features.device).index_add_(0, labels, centred**2)
        covs = sq / denom.unsqueeze(1)
    else:
        outer = centred.unsqueeze(2) * centred.unsqueeze(1)
        covs = torch.zeros(c, d, d, dtype=features.dtype, device=features.device).index_add_(0, labels, outer)
        covs = covs / denom.view(-1, 1, 1)
    return means, covs, counts


def head_class_mask(class_counts: Tensor | Sequence[float], head_classes: int | float | Sequence[int] = 0.4) -> Tensor:
    """Boolean mask of the head classes.

    Args:
        class_counts: per-class training counts.
        head_classes: an ``int`` k (the k most frequent classes), a ``float`` in (0, 1) (that fraction of
            the classes, rounded, at least 1; default 0.4 = classes 0-3 of CIFAR-10-LT as in the paper's
            Fig. 1) or an explicit sequence of class indices.
    """
    counts = check_class_counts(class_counts, allow_zero=True)
    c = counts.numel()
    mask = torch.zeros(c, dtype=torch.bool)
    if isinstance(head_classes, (list, tuple, Tensor, np.ndarray)):
        idx = torch.as_tensor(np.asarray(head_classes, dtype=np.int64))
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= c):
            raise ValueError(f"head_classes must be class indices in [0, {c - 1}]; got {idx.tolist()}")
        mask[idx] = True
    elif isinstance(head_classes, bool) or not isinstance(head_classes, (int, float)):
        raise TypeError(f"head_classes must be an int, a fraction or a sequence of class indices; got {describe(head_classes)}")
    else:
        if isinstance(head_classes, float):
            if not 0.0 < head_classes < 1.0:
                raise ValueError(f"head_classes as a fraction must lie in (0, 1); got {head_classes!r}")
            k = max(1, round(head_classes * c))
        else:
            k = int(head_classes)
        if not 1 <= k < c:
            raise ValueError(f"head_classes must leave at least one head and one tail class (1 <= k < {c}); got {head_classes!r}")
        order = torch.argsort(-counts, stable=True)
        mask[order[:k]] = True
    if not bool(mask.any()) or bool(mask.all()):
        raise ValueError(f"head_classes must select at least one head and one tail class; got {describe(head_classes)}")
    return mask


def related_head_classes(
    means: Tensor,
    head_mask: Tensor,
    k: int = 2,
    similarity: str = "cosine",
    temperature: float = 1.0,
    weighting: str = "softmax",
) -> tuple[Tensor, Tensor]:
    r"""For every class, the ``k`` most similar head classes and their weights :math:`a_{t,h}`.

    Args:
        means: class means ``(C, D)``.
        head_mask: boolean ``(C,)`` mask of the head classes.
        k: number of related head classes (clipped to the number of head classes).
        similarity: ``"cosine"`` of class means or ``"euclidean"`` (negative distance).
        temperature: :math:`T` of the softmax weights.
        weighting: ``"softmax"`` (:math:`a = \mathrm{softmax}(\mathrm{sim}/T)` over the top-k) or ``"uniform"``.

    Returns:
        ``(indices (C, k), weights (C, k))``; a head class is never its own relative.
    """
    check_in_choices("similarity", similarity, _SIMILARITIES)
    check_in_choices("weighting", weighting, _WEIGHTINGS)
    check_positive("temperature", temperature)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int; got {describe(k)}")
    head_mask = head_mask.to(means.device)
    if similarity == "cosine":
        unit = F.normalize(means, dim=1)
        sim = unit @ unit.T
    else:
        sim = -torch.cdist(means, means)
    sim = sim.masked_fill(~head_mask.unsqueeze(0), -math.inf)
    sim = sim.masked_fill(torch.eye(means.shape[0], dtype=torch.bool, device=means.device), -math.inf)
    k = min(k, int(head_mask.sum()))
    top, idx = sim.topk(k, dim=1)
    if weighting == "uniform":
        weights = torch.full_like(top, 1.0 / k)
    else:
        weights = torch.softmax(top / temperature, dim=1)
    return idx, torch.nan_to_num(weights)


def calibrate_statistics(
    means: Tensor,
    covs: Tensor,
    related: Tensor,
    weights: Tensor,
    tail_mask: Tensor,
    alpha: float = 0.2,
    mix_own_covariance: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""Calibrated tail statistics :math:`\mu'_t, \Sigma'_t` (head classes are returned unchanged).

    .. math::

        \mu'_t = \frac{\mu_t + \sum_h a_{t,h}\mu_h}{1 + \sum_h a_{t,h}}, \qquad
        \Sigma'_t = \frac{[\Sigma_t] + \sum_h a_{t,h}\Sigma_h}{[1] + \sum_h a_{t,h}} + \alpha I

    with the bracketed terms only when ``mix_own_covariance``.

    Args:
        means: ``(C, D)``.
        covs: ``(C, D, D)`` or diagonal ``(C, D)``.
        related: ``(C, k)`` related head classes (:func:`related_head_classes`).
        weights: ``(C, k)`` weights :math:`a_{t,h}`.
        tail_mask: ``(C,)`` classes to calibrate.
        alpha: isotropic spread :math:`\alpha \ge 0` added to the calibrated covariance (DC: 0.2).
        mix_own_covariance: include the tail's own covariance (U).
    """
    check_positive("alpha", alpha, allow_zero=True)
    a = weights.to(means.dtype)
    a_sum = a.sum(1, keepdim=True)
    new_means = (means + (a.unsqueeze(2) * means[related]).sum(1)) / (1 + a_sum)
    diag = covs.ndim == 2
    shape = (-1, 1) if diag else (-1, 1, 1)
    borrowed = (a.view(*a.shape, *([1] * (covs.ndim - 1))) * covs[related]).sum(1)
    if mix_own_covariance:
        new_covs = (covs + borrowed) / (1 + a_sum).view(shape)
    else:
        new_covs = borrowed / a_sum.clamp(min=1e-12).view(shape)
    eye = torch.ones(means.shape[1], dtype=covs.dtype, device=covs.device)
    new_covs = new_covs + alpha * (eye if diag else torch.diag(eye))
    tail = tail_mask.to(means.device)
    out_means = torch.where(tail.unsqueeze(1), new_means, means)
    out_covs = torch.where(tail.view(shape), new_covs, covs)
    return out_means, out_covs


def _covariance_factor(cov: Tensor) -> Tensor:
    """A factor ``L`` with ``L L^T = cov`` (eigen-decomposition; robust to singular covariances)."""
    if cov.ndim == 1:
        return torch.diag(cov.clamp(min=0).sqrt())
    vals, vecs = torch.linalg.eigh((cov + cov.T) / 2)
    return vecs * vals.clamp(min=0).sqrt().unsqueeze(0)


def sample_calibrated_features(
    means: Tensor,
    covs: Tensor,
    counts: Tensor,
    target_count: int | str = "max",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Draw :math:`N - n_c` features from :math:`\mathcal N(\mu_c, \Sigma_c)` for every class below :math:`N`.

    Args:
        means: ``(C, D)`` (calibrated) means.
        covs: ``(C, D, D)`` or diagonal ``(C, D)`` (calibrated) covariances.
        counts: ``(C,)`` real samples per class.
        target_count: :math:`N`: ``"max"`` (default), ``"mean"`` (rounded) or an int.
        generator: source of randomness (CPU generator; draws are made on CPU and moved).

    Returns:
        ``(features (M, D), labels (M,))`` of the synthetic samples, in class order.
    """
    counts = counts.detach().cpu().long()
    if target_count == "max":
        n_target = int(counts.max())
    elif target_count == "mean":
        n_target = round(float(counts.float().mean()))
    elif isinstance(target_count, int) and not isinstance(target_count, bool) and target_count >= 1:
        n_target = target_count
    else:
        raise ValueError(f"target_count must be 'max', 'mean' or a positive int; got {target_count!r}")
    feats, labs = [], []
    d = means.shape[1]
    for c in range(means.shape[0]):
        m = n_target - int(counts[c])
        if m <= 0 or int(counts[c]) == 0:
            continue
        z = torch.randn(m, d, generator=generator, dtype=torch.float64)
        factor = _covariance_factor(covs[c].detach().cpu().to(torch.float64))
        x = means[c].detach().cpu().to(torch.float64) + z @ factor.T
        feats.append(x.to(device=means.device, dtype=means.dtype))
        labs.append(torch.full((m,), c, dtype=torch.int64, device=means.device))
    if not feats:
        return means.new_zeros(0, d), torch.zeros(0, dtype=torch.int64, device=means.device)
    return torch.cat(feats), torch.cat(labs)


def fit_classifier(
    features: Tensor,
    labels: Tensor,
    head: nn.Module,
    epochs: int = 30,
    lr: float = 0.1,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
) -> nn.Module:
    """Train ``head`` (e.g. ``nn.Linear``) on fixed features with cross-entropy and momentum SGD.

    Args:
        features: ``(N, D)`` features (real + synthetic); no gradient flows to any backbone.
        labels: ``(N,)`` labels.
        head: the classifier to (re)train in place.
        epochs: passes over the features.
        lr: learning rate (cosine-annealed to 0 over the epochs).
        generator: shuffles the mini-batches.
        batch_size: features per step.
        momentum: SGD momentum.
        weight_decay: L2 penalty on the head.

    Returns:
        ``head`` (trained, in evaluation mode).
    """
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(f"features (N, D) and labels (N,) must match; got {describe(features)} and {describe(labels)}")
    check_positive("lr", lr)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int; got {describe(epochs)}")
    features = features.detach()
    labels = labels.long().to(features.device)
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    n = features.shape[0]
    steps_per_epoch = -(-n // batch_size)
    total = epochs * steps_per_epoch
    step = 0
    head.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator).to(features.device)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            for group in opt.param_groups:
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(head(features[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    head.eval()
    return head


class LADC(nn.Module):
    r"""Label-aware distribution calibration, stage 2: calibrate tail features and re-train the head.

    Args:
        head_classes: head/tail split (see :func:`head_class_mask`; default the 40 % most frequent).
        k: related head classes per tail class (default 2).
        similarity: ``"cosine"`` (default) or ``"euclidean"``.
        temperature: softmax temperature of the relevance weights (default 1).
        weighting: ``"softmax"`` (default) or ``"uniform"`` (DC).
        alpha: isotropic spread added to calibrated covariances (default 0.2).
        covariance: ``"full"`` (default) or ``"diag"``.
        mix_own_covariance: include the tail's own covariance (default ``False``, DC form).
        tukey_power: Tukey exponent applied to (non-negative) features everywhere, or ``None`` (default).
        target_count: per-class count after sampling: ``"max"`` (default), ``"mean"`` or an int.
        epochs, lr, batch_size, weight_decay: classifier re-training (:func:`fit_classifier`).

    After :meth:`fit`, the buffers ``means``, ``covs``, ``calibrated_means``, ``calibrated_covs``,
    ``head_mask`` and the submodule ``head`` hold the result (all saved by ``state_dict``).
    """

    def __init__(
        self,
        head_classes: int | float | Sequence[int] = 0.4,
        k: int = 2,
        similarity: str = "cosine",
        temperature: float = 1.0,
        weighting: str = "softmax",
        alpha: float = 0.2,
        covariance: str = "full",
        mix_own_covariance: bool = False,
        tukey_power: float | None = None,
        target_count: int | str = "max",
        epochs: int = 30,
        lr: float = 0.1,
        batch_size: int = 256,
        weight_decay: float = 5e-4,
    ) -> None:
        super().__init__()
        check_in_choices("similarity", similarity, _SIMILARITIES)
        check_in_choices("weighting", weighting, _WEIGHTINGS)
        check_in_choices("covariance", covariance, _COVARIANCES)
        check_positive("alpha", alpha, allow_zero=True)
        check_positive("temperature", temperature)
        if tukey_power is not None:
            check_positive("tukey_power", tukey_power, allow_zero=True)
        self.head_classes = head_classes
        self.k = k
        self.similarity = similarity
        self.temperature = temperature
        self.weighting = weighting
        self.alpha = alpha
        self.covariance = covariance
        self.mix_own_covariance = mix_own_covariance
        self.tukey_power = tukey_power
        self.target_count = target_count
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.head: nn.Module | None = None
        for name in ("means", "covs", "calibrated_means", "calibrated_covs", "head_mask", "related", "related_weights"):
            self.register_buffer(name, None)

    def transform(self, features: Tensor) -> Tensor:
        """The feature transform applied before statistics and classification (Tukey, when set)."""
        return features if self.tukey_power is None else tukey_transform(features, self.tukey_power)

    def calibrate(self, features: Tensor, labels: Tensor, class_counts: Tensor | Sequence[float] | None = None,
                  num_classes: int | None = None) -> tuple[Tensor, Tensor]:
        """Steps 2-5 on (transformed) features; stores the statistics and returns the calibrated ones."""
        if class_counts is not None:
            counts_split = check_class_counts(class_counts, allow_zero=True)
            num_classes = counts_split.numel()
        means, covs, counts = class_statistics(features, labels, num_classes, self.covariance)
        if class_counts is None:
            counts_split = counts.double().cpu()
        mask = head_class_mask(counts_split, self.head_classes).to(features.device)
        related, weights = related_head_classes(means, mask, self.k, self.similarity, self.temperature, self.weighting)
        tail = ~mask & (counts > 0)
        cal_means, cal_covs = calibrate_statistics(means, covs, related, weights, tail, self.alpha, self.mix_own_covariance)
        self.means, self.covs, self.head_mask = means, covs, mask
        self.related, self.related_weights = related, weights
        self.calibrated_means, self.calibrated_covs = cal_means, cal_covs
        return cal_means, cal_covs

    def fit_features(
        self,
        features: Tensor,
        labels: Tensor,
        class_counts: Tensor | Sequence[float] | None = None,
        head: nn.Module | None = None,
        generator: torch.Generator | None = None,
        num_classes: int | None = None,
    ) -> nn.Module:
        """Steps 2-7 on pre-extracted features: calibrate, sample, re-train ``head`` (new ``nn.Linear`` if None)."""
        feats = self.transform(features.detach())
        labels = labels.long().to(feats.device)
        cal_means, cal_covs = self.calibrate(feats, labels, class_counts, num_classes)
        counts = class_counts_from_labels(labels.cpu(), cal_means.shape[0])
        syn_x, syn_y = sample_calibrated_features(cal_means, cal_covs, counts, self.target_count, generator)
        all_x, all_y = torch.cat([feats, syn_x]), torch.cat([labels, syn_y])
        if head is None:
            head = nn.Linear(feats.shape[1], cal_means.shape[0]).to(device=feats.device, dtype=feats.dtype)
        self.head = fit_classifier(all_x, all_y, head, self.epochs, self.lr, generator, self.batch_size,
                                   weight_decay=self.weight_decay)
        return self.head

    def fit(
        self,
        model: nn.Module | Callable[[Tensor], Tensor],
        x: Tensor,
        y: Tensor,
        class_counts: Tensor | Sequence[float] | None = None,
        head: nn.Module | None = None,
        generator: torch.Generator | None = None,
        batch_size: int = 256,
    ) -> nn.Module:
        """Full stage 2: features of ``x`` from the frozen backbone ``model``, then :meth:`fit_features`.

        Args:
            model: the stage-1 backbone (features, not logits).
            x: training inputs.
            y: training labels.
            class_counts: counts defining the head/tail split (default: counted from ``y``).
            head: classifier to re-train (default: a new ``nn.Linear``).
            generator: randomness for sampling and shuffling.
            batch_size: feature-extraction batch size.

        Returns:
            The re-trained head.
        """
        features = extract_features(model, x, batch_size)
        return self.fit_features(features, y, class_counts, head, generator)

    def forward(self, features: Tensor) -> Tensor:
        """Logits of the re-trained head on backbone features."""
        if self.head is None:
            raise RuntimeError("LADC.forward needs a fitted head; call fit() or fit_features() first")
        return self.head(self.transform(features))

    @torch.no_grad()
    def predict(self, model: nn.Module | Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 256) -> Tensor:
        """Logits of ``head(transform(model(x)))``."""
        return self(extract_features(model, x, batch_size))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # buffers start as None before fit(); materialise them from the saved state
        for name in ("means", "covs", "calibrated_means", "calibrated_covs", "head_mask", "related", "related_weights"):
            key = prefix + name
            if key in state_dict and getattr(self, name) is None:
                setattr(self, name, torch.empty_like(state_dict[key]))
        head_w = prefix + "head.weight"
        if self.head is None and head_w in state_dict:
            w = state_dict[head_w]
            self.head = nn.Linear(w.shape[1], w.shape[0], bias=prefix + "head.bias" in state_dict).to(w)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
