"""Set-valued prediction: top-K and average-K sets, thresholds, errors and streaming counters."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tailwise.metrics import (
    AverageKSetError,
    TopKSetError,
    average_k_sets,
    average_k_threshold,
    error_vs_set_size_curve,
    mean_set_size,
    per_class_set_correct,
    per_class_set_error,
    plot_error_vs_set_size,
    set_contains_target,
    set_coverage,
    set_error,
    top_k_sets,
    top_k_target_rank,
)
from tailwise.train.distributed import shutdown_distributed


def _ambiguous(n: int = 400, c: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities with per-sample temperatures (heterogeneous ambiguity); labels drawn from them."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64)
    temp = torch.exp(torch.randn(n, 1, generator=g, dtype=torch.float64) * 1.2) * 0.7
    probs = (logits / temp).softmax(1)
    y = torch.multinomial(probs, 1, generator=g).squeeze(1)
    return probs, y


# --------------------------------------------------------------------------------- references


def ref_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    mask = np.zeros(scores.shape, dtype=bool)
    for i, row in enumerate(scores):
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))
        for j in order[:k]:
            mask[i, j] = True
    return mask


def ref_threshold(probs: np.ndarray, k: float, rule: str) -> float:
    s = sorted(probs.reshape(-1).tolist(), reverse=True)
    m = math.floor(probs.shape[0] * k + 0.5)
    if rule == "midpoint" and m < len(s):
        return 0.5 * (s[m - 1] + s[m])
    return s[m - 1]


# ---------------------------------------------------------------------------------- predictors


def test_top_k_sets_match_loop_and_break_ties_to_lower_index() -> None:
    probs, y = _ambiguous(n=60, c=7)
    for k in (1, 3, 7):
        np.testing.assert_array_equal(top_k_sets(probs, k).numpy(), ref_top_k(probs.numpy(), k))
        assert (top_k_sets(probs, k).sum(1) == k).all()
    tied = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.1, 0.4, 0.4, 0.1]])
    assert top_k_sets(tied, 2).tolist() == [[True, True, False, False], [False, True, True, False]]
    rank = top_k_target_rank(tied, torch.tensor([3, 2]))
    assert rank.tolist() == [3, 1]
    # the rank agrees with the sets for every K
    rank = top_k_target_rank(probs, y)
    for k in range(1, 8):
        assert torch.equal(rank < k, set_contains_target(top_k_sets(probs, k), y))


@pytest.mark.parametrize("rule", ["midpoint", "quantile"])
def test_average_k_threshold_matches_reference_and_hits_k(rule: str) -> None:
    probs, _ = _ambiguous()
    ks = [1, 2, 3.5, 5, 12]
    lam = average_k_threshold(probs, ks, rule=rule)
    assert lam.shape == (5,) and lam.dtype == torch.float64
    for k, t in zip(ks, lam):
        assert float(t) == ref_threshold(probs.numpy(), k, rule)
        # in-sample: the mean set size is exactly K (no ties in continuous scores)
        assert float(mean_set_size(average_k_sets(probs, t))) == pytest.approx(k, abs=1e-12)
    scalar = average_k_threshold(probs, 2, rule=rule)
    assert scalar.ndim == 0 and float(scalar) == float(lam[1])
    assert (lam[:-1] > lam[1:]).all()  # larger K, lower threshold


def test_average_k_separate_split_mean_size_close_to_k() -> None:
    probs_cal, _ = _ambiguous(n=3000, seed=1)
    probs_test, y_test = _ambiguous(n=3000, seed=2)
    curve = error_vs_set_size_curve(probs_cal, probs_test, y_test, [1, 2, 3, 5])
    torch.testing.assert_close(curve.avgk_mean_set_size, curve.ks, atol=0.15, rtol=0.05)
    # heterogeneous ambiguity: average-K beats top-K at (about) the same mean size
    assert (curve.avgk_error < curve.topk_error).all()
    # the top-K errors are those of the set functions
    for k, e in zip([1, 2, 3, 5], curve.topk_error):
        assert float(e) == pytest.approx(float(set_error(top_k_sets(probs_test, k), y_test)))
    quant = error_vs_set_size_curve(probs_cal, probs_test, y_test, [1, 2], rule="quantile")
    assert (quant.thresholds >= curve.thresholds[:2]).all()


def test_constant_set_size_average_k_equals_top_k() -> None:
    # every row has exactly k large scores, all above every small score: average-K = top-K
    g = torch.Generator().manual_seed(5)
    n, c, k = 200, 9, 3
    raw = torch.rand(n, c, generator=g, dtype=torch.float64) * 0.1 / c
    top = torch.argsort(torch.rand(n, c, generator=g), dim=1)[:, :k]
    raw.scatter_(1, top, 1.0 + torch.rand(n, k, generator=g, dtype=torch.float64))
    probs = raw / raw.sum(1, keepdim=True)
    y = torch.randint(0, c, (n,), generator=g)
    lam = average_k_threshold(probs, k)
    avg, tk = average_k_sets(probs, lam), top_k_sets(probs, k)
    assert torch.equal(avg, tk)
    assert float(set_error(avg, y)) == float(set_error(tk, y))
    a = AverageKSetError(c, thresholds=lam)
    a.update(probs, y)
    t = TopKSetError(c, ks=k)
    t.update(probs, y)
    ra, rt = a.compute(), t.compute()
    assert torch.equal(ra.n_correct, rt.n_correct)
    assert torch.equal(ra.per_class_correct, rt.per_class_correct)
    torch.testing.assert_close(ra.mean_set_size, rt.mean_set_size)


# ------------------------------------------------------------------------------------- metrics


def test_set_metrics_match_loops() -> None:
    probs, y = _ambiguous(n=150, c=6, seed=3)
    mask = average_k_sets(probs, average_k_threshold(probs, 2))
    m, t = mask.numpy(), y.numpy()
    hits = [bool(m[i, t[i]]) for i in range(len(t))]
    assert float(set_error(mask, y)) == pytest.approx(1 - sum(hits) / len(t))
    assert float(set_coverage(mask, y)) == pytest.approx(sum(hits) / len(t))
    assert float(mean_set_size(mask)) == pytest.approx(m.sum() / len(t))
    correct = [sum(h for h, yy in zip(hits, t) if yy == j) for j in range(6)]
    assert per_class_set_correct(mask, y).tolist() == correct
    counts = [int((t == j).sum()) for j in range(6)]
    expected = [1 - cc / n if n else float("nan") for cc, n in zip(correct, counts)]
    np.testing.assert_allclose(per_class_set_error(mask, y).numpy(), expected)
    # a class with no sample gets NaN, not 0
    err = per_class_set_error(mask, y, num_classes=8)
    assert torch.isnan(err[6:]).all() and torch.isfinite(err[:6]).all()


def test_streaming_equals_one_shot_and_state_dict() -> None:
    probs, y = _ambiguous(n=333, c=10, seed=4)
    ks = [1, 2, 4]
    lam = average_k_threshold(probs, ks)
    metrics = [TopKSetError(10, ks=ks), AverageKSetError(10, thresholds=lam, avg_k=ks), AverageKSetError(10, avg_k=ks)]
    for metric in metrics:
        for p, t in zip(torch.tensor_split(probs, 4), torch.tensor_split(y, 4)):
            metric.update(p, t)
    top, fixed, in_sample = (m.compute() for m in metrics)
    for i, k in enumerate(ks):
        tk = top_k_sets(probs, k)
        av = average_k_sets(probs, lam[i])
        assert int(top.n_correct[i]) == int(set_contains_target(tk, y).sum())
        assert torch.equal(top.per_class_correct[i], per_class_set_correct(tk, y))
        for res in (fixed, in_sample):
            assert int(res.n_correct[i]) == int(set_contains_target(av, y).sum())
            assert torch.equal(res.per_class_correct[i], per_class_set_correct(av, y))
            assert float(res.error[i]) == pytest.approx(float(set_error(av, y)))
            assert float(res.mean_set_size[i]) == pytest.approx(k)
    torch.testing.assert_close(top.mean_set_size, torch.tensor(ks, dtype=torch.float64))
    torch.testing.assert_close(in_sample.thresholds, lam)
    torch.testing.assert_close(top.coverage, 1 - top.error)
    assert torch.equal(top.per_class_count, torch.bincount(y, minlength=10))
    np.testing.assert_allclose(top.per_class_error[1].numpy(), per_class_set_error(top_k_sets(probs, 2), y).numpy())
    # checkpoints: sum states (fixed) and cat states (in-sample) both round-trip
    for i, make in enumerate((lambda: TopKSetError(10, ks=ks), lambda: AverageKSetError(10, thresholds=lam),
                              lambda: AverageKSetError(10, avg_k=ks))):
        fresh = make()
        fresh.load_state_dict(metrics[i].state_dict())
        assert torch.equal(fresh.compute().n_correct, metrics[i].compute().n_correct)


def test_plot_error_vs_set_size(tmp_path: Path) -> None:
    probs, y = _ambiguous(n=200, c=8, seed=6)
    curve = error_vs_set_size_curve(probs[:100], probs[100:], y[100:], [1, 1.5, 2, 3])
    assert torch.isnan(curve.topk_error[1]) and torch.isfinite(curve.avgk_error).all()
    path = tmp_path / "curve.png"
    fig = plot_error_vs_set_size(curve, path=path, title="avg-k vs top-k")
    assert path.is_file() and path.stat().st_size > 0 and fig is not None


# ------------------------------------------------------------------------------------- bad input


def test_bad_inputs() -> None:
    probs, y = _ambiguous(n=20, c=5)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 5\]"):
        top_k_sets(probs, 0)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 5\]"):
        top_k_sets(probs, 6)
    with pytest.raises(ValueError, match=r"avg_k must be numbers in \(0, 5\]"):
        average_k_threshold(probs, 5.5)
    with pytest.raises(ValueError, match=r"avg_k must be numbers in \(0, 5\]"):
        average_k_threshold(probs, [1, 0])
    with pytest.raises(ValueError, match="rule must be one of"):
        average_k_threshold(probs, 1, rule="median")
    with pytest.raises(ValueError, match=r"at least 0\.5"):
        average_k_threshold(probs, 0.01)
    with pytest.raises(ValueError, match=r"probs_heldout must have shape \(N, C\)"):
        average_k_threshold(probs[0], 1)
    with pytest.raises(ValueError, match="probs_heldout must be finite"):
        average_k_threshold(torch.full((2, 3), float("nan")), 1)
    with pytest.raises(ValueError, match="threshold must be a scalar"):
        average_k_sets(probs, torch.tensor([0.1, 0.2]))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        set_error(probs, y)
    with pytest.raises(ValueError, match="target must have shape"):
        set_error(probs > 0.2, y[:3])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        mean_set_size(probs > 0.2) + set_error(probs > 0.2, y + 5)
    with pytest.raises(TypeError, match="integer class indices"):
        set_error(probs > 0.2, y.float())
    with pytest.raises(ValueError, match=r"needs thresholds .* or avg_k"):
        AverageKSetError(5)
    with pytest.raises(ValueError, match="one K per threshold"):
        AverageKSetError(5, thresholds=[0.1, 0.2], avg_k=[1])
    with pytest.raises(ValueError, match="5 columns"):
        AverageKSetError(5, thresholds=0.1).update(torch.rand(3, 4), y[:3])
    with pytest.raises(ValueError, match=r"ks must be integers in \(0, 5\]"):
        TopKSetError(5, ks=[1, 2.5])
    with pytest.raises(ValueError, match="num_classes must be an integer"):
        TopKSetError(0)
    with pytest.raises(RuntimeError, match="call update"):
        TopKSetError(5).compute()
    with pytest.raises(RuntimeError, match="call update"):
        AverageKSetError(5, avg_k=1).compute()


# ------------------------------------------------------------------------------------------- DDP


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        probs, y = _ambiguous(n=151, c=8, seed=9)
        sl = slice(0, 70) if rank == 0 else slice(70, None)
        ks = [1, 3]
        lam = average_k_threshold(probs, ks)  # thresholds from the whole split, as a trainer would pass them
        out = {}
        for name, metric in {"top": TopKSetError(8, ks=ks), "fixed": AverageKSetError(8, thresholds=lam),
                             "in_sample": AverageKSetError(8, avg_k=ks)}.items():
            metric.update(probs[sl], y[sl])
            res = metric.compute()
            out[name] = (res.n_correct, res.per_class_correct, res.mean_set_size, res.thresholds)
        torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    finally:
        shutdown_distributed()


def test_ddp_two_process_sync_equals_union(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    probs, y = _ambiguous(n=151, c=8, seed=9)
    ks = [1, 3]
    lam = average_k_threshold(probs, ks)
    expected = {}
    for name, metric in {"top": TopKSetError(8, ks=ks), "fixed": AverageKSetError(8, thresholds=lam),
                         "in_sample": AverageKSetError(8, avg_k=ks)}.items():
        metric.update(probs, y)
        res = metric.compute()
        expected[name] = (res.n_correct, res.per_class_correct, res.mean_set_size, res.thresholds)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for name, values in expected.items():
            for a, b in zip(got[name], values):
                if b is None:
                    assert a is None
                else:
                    torch.testing.assert_close(a, b, msg=f"rank {rank}: {name}")
