"""Calibration metrics: ECE / MCE / adaptive / classwise ECE, NLL, Brier, reliability diagram."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tailwise.metrics import (
    ECE,
    MCE,
    NLL,
    AdaptiveECE,
    BrierScore,
    ClasswiseECE,
    adaptive_calibration_error,
    brier_score,
    calibration_bin_edges,
    calibration_bin_index,
    classwise_calibration_error,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_diagram,
)
from tailwise.train.distributed import shutdown_distributed

# --------------------------------------------------------------------------------- slow references


def _bin_of(c: float, edges: list[float]) -> int:
    m = len(edges) - 1
    if c <= edges[1]:
        return 0
    for b in range(1, m):
        if edges[b] < c <= edges[b + 1]:
            return b
    raise AssertionError(f"confidence {c} in no bin")


def _combine(bins: list[list[tuple[float, float]]], n: int, norm: str) -> float:
    """``bins[m]`` = list of (confidence, outcome) pairs."""
    terms = []
    for members in bins:
        if not members:
            continue
        acc = sum(o for _, o in members) / len(members)
        conf = sum(c for c, _ in members) / len(members)
        terms.append((len(members), acc - conf))
    if norm == "l1":
        return sum(k / n * abs(g) for k, g in terms)
    if norm == "l2":
        return math.sqrt(sum(k / n * g * g for k, g in terms))
    return max(abs(g) for _, g in terms)


def ref_ece(probs: np.ndarray, y: np.ndarray, n_bins: int, norm: str = "l1") -> float:
    edges = np.linspace(0.0, 1.0, n_bins + 1).tolist()
    bins: list[list[tuple[float, float]]] = [[] for _ in range(n_bins)]
    for p, t in zip(probs, y):
        j = int(np.argmax(p))
        c = float(p[j])
        bins[_bin_of(c, edges)].append((c, float(j == t)))
    return _combine(bins, len(y), norm)


def ref_adaptive(probs: np.ndarray, y: np.ndarray, n_bins: int, norm: str = "l1") -> float:
    pairs = sorted((float(p.max()), float(int(np.argmax(p)) == t)) for p, t in zip(probs, y))
    chunks = np.array_split(np.arange(len(pairs)), n_bins)
    bins = [[pairs[i] for i in chunk] for chunk in chunks]
    return _combine(bins, len(y), norm)


def ref_classwise(probs: np.ndarray, y: np.ndarray, n_bins: int, norm: str = "l1") -> float:
    edges = np.linspace(0.0, 1.0, n_bins + 1).tolist()
    per_class = []
    for j in range(probs.shape[1]):
        bins: list[list[tuple[float, float]]] = [[] for _ in range(n_bins)]
        for p, t in zip(probs, y):
            bins[_bin_of(float(p[j]), edges)].append((float(p[j]), float(t == j)))
        per_class.append(_combine(bins, len(y), norm))
    return sum(per_class) / len(per_class)


def ref_nll(probs: np.ndarray, y: np.ndarray) -> float:
    return sum(-math.log(p[t]) for p, t in zip(probs, y)) / len(y)


def ref_brier(probs: np.ndarray, y: np.ndarray) -> float:
    total = 0.0
    for p, t in zip(probs, y):
        total += sum((p[j] - (1.0 if j == t else 0.0)) ** 2 for j in range(len(p)))
    return total / len(y)


def _data(n: int = 300, c: int = 7, seed: int = 0, scale: float = 2.5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    target = torch.randint(0, c, (n,), generator=g)
    return logits, target


# ----------------------------------------------------------------------------------- vs references


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_ece_family_matches_loop_reference(norm: str, n_bins: int) -> None:
    logits, y = _data()
    probs = logits.softmax(1)
    p, t = probs.numpy(), y.numpy()
    torch.testing.assert_close(expected_calibration_error(probs, y, n_bins, norm),
                               torch.tensor(ref_ece(p, t, n_bins, norm), dtype=torch.float64))
    torch.testing.assert_close(adaptive_calibration_error(probs, y, n_bins, norm),
                               torch.tensor(ref_adaptive(p, t, n_bins, norm), dtype=torch.float64))
    torch.testing.assert_close(classwise_calibration_error(probs, y, n_bins, norm),
                               torch.tensor(ref_classwise(p, t, n_bins, norm), dtype=torch.float64))


def test_mce_nll_brier_match_loop_reference() -> None:
    logits, y = _data(n=200, c=5)
    probs = logits.softmax(1)
    p, t = probs.numpy(), y.numpy()
    torch.testing.assert_close(maximum_calibration_error(probs, y, 15), torch.tensor(ref_ece(p, t, 15, "max"), dtype=torch.float64))
    torch.testing.assert_close(negative_log_likelihood(probs, y), torch.tensor(ref_nll(p, t), dtype=torch.float64))
    torch.testing.assert_close(negative_log_likelihood(logits, y, input="logits"), torch.tensor(ref_nll(p, t), dtype=torch.float64))
    torch.testing.assert_close(brier_score(probs, y), torch.tensor(ref_brier(p, t), dtype=torch.float64))
    torch.testing.assert_close(negative_log_likelihood(logits, y, input="logits"),
                               torch.nn.functional.cross_entropy(logits, y))


def test_adaptive_ties_and_small_n() -> None:
    # many tied confidences: the value depends only on the multiset, not on the input order
    probs = torch.tensor([[0.6, 0.4]] * 6 + [[0.9, 0.1]] * 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 1, 0, 0, 0, 1, 0, 0])
    a = adaptive_calibration_error(probs, y, n_bins=3)
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(3))
    b = adaptive_calibration_error(probs[perm], y[perm], n_bins=3)
    assert float(a) == float(b)
    torch.testing.assert_close(a, torch.tensor(ref_adaptive(probs.numpy(), y.numpy(), 3), dtype=torch.float64))
    # fewer samples than bins: one sample per chunk, the empty chunks contribute nothing
    few_p, few_y = probs[[0, 1, 6]], y[[0, 1, 6]]
    per_sample = (few_p.max(1).values - (few_p.argmax(1) == few_y).double()).abs().mean()
    torch.testing.assert_close(adaptive_calibration_error(few_p, few_y, n_bins=15), per_sample)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_logits_input_and_dtypes(dtype: torch.dtype) -> None:
    logits, y = _data(n=120, c=4)
    x = logits.to(dtype)
    probs64 = x.double().softmax(1)
    out = expected_calibration_error(x, y, input="logits")
    assert out.dtype == torch.promote_types(dtype, torch.float32)
    torch.testing.assert_close(out.double(), expected_calibration_error(probs64, y), atol=1e-6, rtol=1e-6)
    assert torch.isfinite(brier_score(x, y, input="logits"))


# ------------------------------------------------------------------------------------- properties


def test_bin_edges_first_closed_last_contains_one() -> None:
    edges = calibration_bin_edges(15)
    assert edges[0] == 0.0 and edges[-1] == 1.0 and edges.numel() == 16
    conf = torch.tensor([0.0, 1 / 15, 1 / 15 + 1e-12, 0.5, 1.0 - 1e-12, 1.0], dtype=torch.float64)
    assert calibration_bin_index(conf, 15).tolist() == [0, 0, 1, 7, 14, 14]
    # one-hot predictions: confidence exactly 1.0 lands in the last bin, not a phantom 16th one
    probs = torch.eye(4, dtype=torch.float64).repeat(5, 1)
    y = torch.arange(4).repeat(5)
    assert float(expected_calibration_error(probs, y)) == 0.0
    assert float(expected_calibration_error(probs, (y + 1) % 4)) == 1.0
    data = reliability_diagram(probs, y, n_bins=15)
    assert data.bin_count[-1] == 20 and data.bin_count[:-1].sum() == 0
    assert float(data.bin_accuracy[-1]) == 1.0 and float(data.bin_confidence[-1]) == 1.0
    # classwise: the zeros land in the first bin, the ones in the last
    torch.testing.assert_close(classwise_calibration_error(probs, y), torch.tensor(0.0, dtype=torch.float64))


def test_perfectly_calibrated_predictor_has_small_ece() -> None:
    g = torch.Generator().manual_seed(1)
    n, c = 100_000, 5
    probs = (torch.randn(n, c, generator=g, dtype=torch.float64) * 2).softmax(1)
    y = torch.multinomial(probs, 1, generator=g).squeeze(1)
    assert float(expected_calibration_error(probs, y)) < 0.01
    assert float(adaptive_calibration_error(probs, y)) < 0.01
    assert float(classwise_calibration_error(probs, y)) < 0.005
    # an over-confident predictor is far off
    sharp = (probs.log() * 3).softmax(1)
    assert float(expected_calibration_error(sharp, y)) > 0.1


# --------------------------------------------------------------------------------------- stateful


def _metric_pairs(c: int):
    return [
        (ECE(n_bins=10), lambda p, y: expected_calibration_error(p, y, 10)),
        (ECE(n_bins=10, norm="l2"), lambda p, y: expected_calibration_error(p, y, 10, "l2")),
        (MCE(n_bins=10), lambda p, y: maximum_calibration_error(p, y, 10)),
        (AdaptiveECE(n_bins=10), lambda p, y: adaptive_calibration_error(p, y, 10)),
        (ClasswiseECE(c, n_bins=10), lambda p, y: classwise_calibration_error(p, y, 10)),
        (NLL(), negative_log_likelihood),
        (BrierScore(), brier_score),
    ]


def test_streaming_equals_one_shot() -> None:
    logits, y = _data(n=257, c=6)
    probs = logits.softmax(1)
    for metric, fn in _metric_pairs(6):
        for chunk_p, chunk_y in zip(torch.tensor_split(probs, 5), torch.tensor_split(y, 5)):
            metric.update(chunk_p, chunk_y)
        torch.testing.assert_close(metric.compute(), fn(probs, y), msg=type(metric).__name__)
        metric.reset()
        metric(probs[:50], y[:50])  # calling the metric updates it
        torch.testing.assert_close(metric.compute(), fn(probs[:50], y[:50]))


def test_logits_input_stateful() -> None:
    logits, y = _data(n=64, c=3)
    m = ECE(input="logits")
    m.update(logits, y)
    torch.testing.assert_close(m.compute(), expected_calibration_error(logits.softmax(1), y))
    nll = NLL(input="logits")
    nll.update(logits, y)
    torch.testing.assert_close(nll.compute(), torch.nn.functional.cross_entropy(logits, y))


def test_state_dict_round_trip() -> None:
    logits, y = _data(n=90, c=4)
    probs = logits.softmax(1)
    for make in (lambda: ECE(8), lambda: AdaptiveECE(8), lambda: ClasswiseECE(4, 8), BrierScore):
        a = make()
        a.update(probs, y)
        b = make()
        b.load_state_dict(a.state_dict())
        torch.testing.assert_close(b.compute(), a.compute())


# -------------------------------------------------------------------------------------- bad input


def test_bad_inputs() -> None:
    logits, y = _data(n=10, c=3)
    probs = logits.softmax(1)
    with pytest.raises(ValueError, match="input must be one of"):
        expected_calibration_error(probs, y, input="scores")
    with pytest.raises(ValueError, match="norm must be one of"):
        expected_calibration_error(probs, y, norm="l3")
    with pytest.raises(ValueError, match="n_bins must be an integer >= 1"):
        expected_calibration_error(probs, y, n_bins=0)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*input='logits'"):
        expected_calibration_error(logits, y)
    with pytest.raises(ValueError, match="rows must sum to 1"):
        brier_score(probs * 0.5, y)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        negative_log_likelihood(probs, torch.full((10,), 3))
    with pytest.raises(ValueError, match="target must have shape"):
        adaptive_calibration_error(probs, y[:5])
    with pytest.raises(ValueError, match="must be finite"):
        expected_calibration_error(torch.full((2, 3), float("nan")), y[:2], input="logits")
    with pytest.raises(ValueError, match="at least one sample"):
        expected_calibration_error(torch.empty(0, 3), torch.empty(0, dtype=torch.long))
    with pytest.raises(TypeError, match="floating-point"):
        expected_calibration_error(torch.ones(2, 3, dtype=torch.long), y[:2])
    with pytest.raises(ValueError, match="3 columns"):
        ClasswiseECE(3).update(torch.full((2, 4), 0.25), y[:2])
    with pytest.raises(ValueError, match="num_classes must be an integer"):
        ClasswiseECE(0)
    with pytest.raises(RuntimeError, match="call update"):
        ECE().compute()
    with pytest.raises(RuntimeError, match="call update"):
        AdaptiveECE().compute()


# ------------------------------------------------------------------------------------ reliability


def test_reliability_diagram_data_and_plot(tmp_path: Path) -> None:
    logits, y = _data(n=400, c=5)
    probs = logits.softmax(1)
    path = tmp_path / "rel.png"
    data = reliability_diagram(probs, y, n_bins=12, path=path, title="test")
    assert path.is_file() and path.stat().st_size > 0
    assert data.n_samples == 400
    assert data.ece == pytest.approx(float(expected_calibration_error(probs, y, 12)), abs=1e-12)
    assert data.mce == pytest.approx(float(maximum_calibration_error(probs, y, 12)), abs=1e-12)
    empty = data.bin_count == 0
    assert torch.isnan(data.bin_accuracy[empty]).all() and torch.isfinite(data.bin_accuracy[~empty]).all()


# ------------------------------------------------------------------------------------------- DDP


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        logits, y = _data(n=203, c=6, seed=7)
        probs = logits.softmax(1)
        # uneven shards: rank 0 gets the first 120 samples, rank 1 the rest
        sl = slice(0, 120) if rank == 0 else slice(120, None)
        results = {}
        for metric, _ in _metric_pairs(6):
            metric.update(probs[sl], y[sl])
            results[type(metric).__name__ + getattr(metric, "norm", "")] = metric.compute()
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        shutdown_distributed()


def test_ddp_two_process_sync_equals_union(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    logits, y = _data(n=203, c=6, seed=7)
    probs = logits.softmax(1)
    expected = {type(m).__name__ + getattr(m, "norm", ""): fn(probs, y) for m, fn in _metric_pairs(6)}
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got.keys() == expected.keys()
        for name, value in expected.items():
            torch.testing.assert_close(got[name], value, msg=f"rank {rank}: {name}")
