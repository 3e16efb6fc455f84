"""Classifier heads of the reference models and the helper that swaps one in.

Every reference model of :mod:`tailwise.models` ends in an attribute ``classifier``: an ``nn.Module``
mapping the penultimate features ``(N, D)`` (``D = model.feature_dim``) to logits ``(N, C)``. Two heads
are built by name:

- ``"linear"``: ``nn.Linear(D, C)`` with a bias (cross-entropy, focal, VS, LA ... in the LDAM-DRW code);
- ``"normed"``: the cosine head ``NormedLinear(D, C)`` of LDAM (Cao et al., NeurIPS 2019), whose
  logits are cosines in ``[-1, 1]`` (the LDAM loss multiplies them by ``s``).

Decoupled two-stage methods (cRT, LADC, ABSGD's second stage) re-train or replace the head alone:
:func:`replace_classifier` swaps it and checks that the new head accepts ``D`` features.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from tailwise._validation import check_in_choices, check_int, describe

__all__ = ["HEADS", "HeadName", "build_head", "replace_classifier"]

HeadName = Literal["linear", "normed"]
HEADS: tuple[str, ...] = ("linear", "normed")


def build_head(head: HeadName, in_features: int, num_classes: int) -> nn.Module:
    """Build a classifier head by name.

    Args:
        head: ``"linear"`` (``nn.Linear`` with bias) or ``"normed"`` (the cosine head
            ``tailwise.models.normed_linear.NormedLinear``, weight stored as ``(in, out)`` like the LDAM-DRW
            code, no bias).
        in_features: feature dimension ``D``.
        num_classes: number of classes ``C``.

    Returns:
        A module mapping ``(N, D)`` to ``(N, C)``.

    Raises:
        ValueError: unknown ``head`` or sizes below 1.
    """
    check_in_choices("head", head, HEADS)
    in_features = check_int("in_features", in_features)
    num_classes = check_int("num_classes", num_classes)
    if head == "linear":
        return nn.Linear(in_features, num_classes)
    # Imported here so that the models import without the cosine head's module.
    from tailwise.models.normed_linear import NormedLinear

    return NormedLinear(in_features, num_classes, transposed_layout=True)


def _head_in_features(head: nn.Module) -> int | None:
    """The input width a head declares (``in_features``), or ``None`` when it declares none."""
    value = getattr(head, "in_features", None)
    if isinstance(value, int):
        return value
    if isinstance(head, nn.Sequential) and len(head) > 0:
        return _head_in_features(head[0])
    return None


def replace_classifier(model: nn.Module, new_head: nn.Module) -> nn.Module:
    """Replace ``model.classifier`` by ``new_head`` in place and return the old head.

    The new head must map ``(N, model.feature_dim)`` features to logits. When it declares an
    ``in_features`` attribute (``nn.Linear``, ``NormedLinear``, or an ``nn.Sequential`` starting with
    one), that width is checked against ``model.feature_dim``.

    Args:
        model: a model with a ``classifier`` attribute (every model of :mod:`tailwise.models`).
        new_head: the replacement head.

    Returns:
        The previous head (so that it can be restored or inspected).

    Raises:
        TypeError: ``model`` has no ``classifier`` attribute or ``new_head`` is not an ``nn.Module``.
        ValueError: the new head's ``in_features`` differs from ``model.feature_dim``.

    Example:
        >>> from torch import nn
        >>> from tailwise.models import resnet32, replace_classifier
        >>> model = resnet32(num_classes=10)
        >>> old = replace_classifier(model, nn.Linear(model.feature_dim, 10))
    """
    if not isinstance(model, nn.Module) or not isinstance(getattr(model, "classifier", None), nn.Module):
        raise TypeError(f"model must be an nn.Module with a 'classifier' sub-module; got {type(model).__name__}")
    if not isinstance(new_head, nn.Module):
        raise TypeError(f"new_head must be an nn.Module; got {describe(new_head)}")
    feature_dim = getattr(model, "feature_dim", None)
    width = _head_in_features(new_head)
    if isinstance(feature_dim, int) and width is not None and width != feature_dim:
        raise ValueError(
            f"new_head must take model.feature_dim = {feature_dim} input features; got a head with in_features={width}"
        )
    old = model.classifier
    model.classifier = new_head
    return old
