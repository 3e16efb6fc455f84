"""Golden checker for average-K vs top-K (PlantNet-300K threshold rule and counters).

Recomputes, from the stored inputs (``val_*``/``test_*`` logits, probabilities and labels,
``list_k``, ``n_val``), the thresholds, the avg-K and top-K correct counts on both splits, the mean
set sizes and the per-class test counts, through tailwise's public API (functional and stateful).
"""

from __future__ import annotations

import numpy as np
import torch

from golden_checkers._util import close, long, t64
from tailwise.metrics import (
    AverageKSetError,
    TopKSetError,
    average_k_sets,
    average_k_threshold,
    mean_set_size,
    per_class_set_correct,
    set_contains_target,
    top_k_sets,
)


def _exact(actual: torch.Tensor | np.ndarray, expected: np.ndarray, what: str) -> None:
    if isinstance(actual, torch.Tensor):
        actual = actual.detach().cpu().numpy()
    np.testing.assert_array_equal(np.asarray(actual, dtype=np.int64), np.asarray(expected, dtype=np.int64), err_msg=what)


def _streamed(metric: torch.nn.Module, scores: torch.Tensor, target: torch.Tensor, chunks: int = 3):
    for s, y in zip(torch.tensor_split(scores, chunks), torch.tensor_split(target, chunks)):
        if y.numel():
            metric.update(s, y)
    return metric.compute()


def check_avgk(data: dict[str, np.ndarray]) -> None:
    val_probs, test_probs = t64(data["val_probas"]), t64(data["test_probas"])
    val_logits, test_logits = t64(data["val_logits"]), t64(data["test_logits"])
    val_y, test_y = long(data["val_labels"]), long(data["test_labels"])
    ks = [int(k) for k in np.asarray(data["list_k"]).reshape(-1)]
    n_val, c = val_probs.shape
    if "n_val" in data:
        assert int(data["n_val"]) == n_val, f"n_val key {int(data['n_val'])} != {n_val} validation rows"

    lam = average_k_threshold(val_probs, ks, rule="midpoint")
    close(lam, data["lmbda"], rtol=1e-12, atol=0.0, what="lmbda")

    split = {"val": (val_probs, val_logits, val_y), "test": (test_probs, test_logits, test_y)}
    for name, (probs, logits, y) in split.items():
        n_avgk, n_topk, sizes, pc_avgk, pc_topk = [], [], [], [], []
        for i, k in enumerate(ks):
            mask_a = average_k_sets(probs, lam[i])
            mask_t = top_k_sets(logits, k)
            n_avgk.append(int(set_contains_target(mask_a, y).sum()))
            n_topk.append(int(set_contains_target(mask_t, y).sum()))
            sizes.append(float(mean_set_size(mask_a)))
            pc_avgk.append(per_class_set_correct(mask_a, y, c).numpy())
            pc_topk.append(per_class_set_correct(mask_t, y, c).numpy())
        _exact(np.array(n_avgk), data[f"n_correct_avgk_{name}"], f"n_correct_avgk_{name}")
        _exact(np.array(n_topk), data[f"n_correct_topk_{name}"], f"n_correct_topk_{name}")
        if f"mean_set_size_{name}" in data:
            close(np.array(sizes), data[f"mean_set_size_{name}"], rtol=1e-12, atol=1e-12, what=f"mean_set_size_{name}")
        if f"per_class_correct_avgk_{name}" in data:
            _exact(np.stack(pc_avgk), data[f"per_class_correct_avgk_{name}"], f"per_class_correct_avgk_{name}")
        if f"per_class_correct_topk_{name}" in data:
            _exact(np.stack(pc_topk), data[f"per_class_correct_topk_{name}"], f"per_class_correct_topk_{name}")

        # the stateful counters, streamed in chunks, agree with the functional counts
        fixed = _streamed(AverageKSetError(c, thresholds=lam, avg_k=ks), probs, y)
        _exact(fixed.n_correct, np.array(n_avgk), f"AverageKSetError.n_correct ({name})")
        close(fixed.mean_set_size, np.array(sizes), rtol=1e-12, atol=1e-12, what=f"AverageKSetError.mean_set_size ({name})")
        _exact(fixed.per_class_correct, np.stack(pc_avgk), f"AverageKSetError.per_class_correct ({name})")
        topk = _streamed(TopKSetError(c, ks=ks), logits, y)
        _exact(topk.n_correct, np.array(n_topk), f"TopKSetError.n_correct ({name})")
        _exact(topk.per_class_correct, np.stack(pc_topk), f"TopKSetError.per_class_correct ({name})")

    # the in-sample validation mode estimates the same thresholds and counts in one pass
    in_sample = _streamed(AverageKSetError(c, avg_k=ks), val_probs, val_y)
    assert in_sample.thresholds is not None
    close(in_sample.thresholds, data["lmbda"], rtol=1e-12, atol=0.0, what="in-sample lmbda")
    _exact(in_sample.n_correct, data["n_correct_avgk_val"], "in-sample n_correct_avgk_val")


CHECKERS = {"avgk": check_avgk}
