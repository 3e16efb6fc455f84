"""Classification metrics: loop references, streaming, reset, NaN conventions, state_dict, errors, DDP."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tailwise._validation import validation_disabled
from tailwise.metrics import (
    SHOT_GROUPS,
    Accuracy,
    BalancedAccuracy,
    ClassificationReport,
    ConfusionMatrix,
    PerClassAccuracy,
    ShotGroupAccuracy,
    TopKAccuracy,
    accuracy,
    balanced_accuracy,
    classification_report,
    confusion_matrix,
    per_class_accuracy,
    shot_group_accuracy,
    shot_groups,
)
from tailwise.train.distributed import shutdown_distributed

NAN = float("nan")
COUNTS = [500, 300, 101, 100, 60, 20, 19, 5]  # many: 3 (> 100); medium: 100, 60, 20; few: 19, 5


# ---------------------------------------------------------------------------------------------------
# slow, obviously-correct references


def ref_confmat(pred: list[int], target: list[int], c: int) -> list[list[int]]:
    m = [[0] * c for _ in range(c)]
    for p, t in zip(pred, target):
        m[t][p] += 1
    return m


def ref_argmax(scores: torch.Tensor) -> list[int]:
    out = []
    for row in scores.tolist():
        best = 0
        for j, v in enumerate(row):
            if v > row[best]:
                best = j
        out.append(best)
    return out


def ref_accuracy(pred: list[int], target: list[int]) -> float:
    return sum(p == t for p, t in zip(pred, target)) / len(target) if target else NAN


def ref_topk(scores: torch.Tensor, target: list[int], k: int) -> float:
    hits = 0
    for row, t in zip(scores.tolist(), target):
        order = sorted(range(len(row)), key=lambda j: -row[j])
        hits += t in order[:k]
    return hits / len(target)


def ref_per_class(pred: list[int], target: list[int], c: int) -> list[float]:
    out = []
    for cls in range(c):
        idx = [i for i, t in enumerate(target) if t == cls]
        out.append(sum(pred[i] == cls for i in idx) / len(idx) if idx else NAN)
    return out


def ref_balanced(pred: list[int], target: list[int], c: int) -> float:
    present = [v for v in ref_per_class(pred, target, c) if not math.isnan(v)]
    return sum(present) / len(present) if present else NAN


def ref_group_of(n: float, many: float, few: float, inclusive: bool) -> str:
    if (n >= many) if inclusive else (n > many):
        return "many"
    if (n <= few) if inclusive else (n < few):
        return "few"
    return "medium"


def ref_shot(pred, target, counts, many=100, few=20, inclusive=False, average="macro") -> dict[str, float]:
    per_class = ref_per_class(pred, target, len(counts))
    out = {}
    for group in ("many", "medium", "few"):
        members = [c for c, n in enumerate(counts) if ref_group_of(n, many, few, inclusive) == group]
        if average == "macro":
            vals = [per_class[c] for c in members if not math.isnan(per_class[c])]
            out[group] = sum(vals) / len(vals) if vals else NAN
        else:
            idx = [i for i, t in enumerate(target) if t in members]
            out[group] = sum(pred[i] == target[i] for i in idx) / len(idx) if idx else NAN
    return out


def assert_close_nan(actual, expected, tol: float = 1e-6) -> None:
    actual = actual.tolist() if isinstance(actual, torch.Tensor) else actual
    if isinstance(expected, list):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_close_nan(a, e, tol)
        return
    if math.isnan(expected):
        assert math.isnan(actual), f"expected NaN, got {actual}"
    else:
        assert abs(actual - expected) <= tol, f"{actual} != {expected}"


def make_data(seed: int, n: int = 157, c: int = len(COUNTS), missing: bool = False):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, c, generator=g)
    high = c - 1 if missing else c  # leave the last class without samples
    target = torch.randint(0, high, (n,), generator=g)
    # make the predictions better than chance so the numbers are not all tiny
    scores[torch.arange(n), target] += torch.rand(n, generator=g) * 1.5
    return scores, target


SEEDS = [0, 1, 2, 3]


# ---------------------------------------------------------------------------------------------------
# functional and module == loop reference


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("missing", [False, True])
def test_against_loop_reference(seed: int, missing: bool) -> None:
    scores, target = make_data(seed, missing=missing)
    c = scores.shape[1]
    pred_list, tgt_list = ref_argmax(scores), target.tolist()
    pred = torch.tensor(pred_list)
    assert confusion_matrix(scores, target).tolist() == ref_confmat(pred_list, tgt_list, c)
    assert confusion_matrix(pred, target, num_classes=c).tolist() == ref_confmat(pred_list, tgt_list, c)
    for inputs in ((scores, target), (pred, target), (scores.softmax(1), target)):
        kw = {"num_classes": c}
        assert_close_nan(accuracy(*inputs, **kw), ref_accuracy(pred_list, tgt_list))
        assert_close_nan(per_class_accuracy(*inputs, **kw), ref_per_class(pred_list, tgt_list, c))
        assert_close_nan(balanced_accuracy(*inputs, **kw), ref_balanced(pred_list, tgt_list, c))
    for k in (1, 2, 5, c):
        from tailwise.metrics import top_k_accuracy

        assert_close_nan(top_k_accuracy(scores, target, k=k), ref_topk(scores, tgt_list, k))
    for inclusive in (False, True):
        for average in ("macro", "micro"):
            r = shot_group_accuracy(scores, target, COUNTS, inclusive=inclusive, average=average)
            ref = ref_shot(pred_list, tgt_list, COUNTS, inclusive=inclusive, average=average)
            assert_close_nan([r.many, r.medium, r.few], [ref["many"], ref["medium"], ref["few"]])
    # modules == functional
    assert_close_nan(_fed(Accuracy(), scores, target), ref_accuracy(pred_list, tgt_list))
    assert_close_nan(_fed(BalancedAccuracy(c), scores, target), ref_balanced(pred_list, tgt_list, c))
    assert_close_nan(_fed(PerClassAccuracy(c), scores, target), ref_per_class(pred_list, tgt_list, c))
    assert _fed(ConfusionMatrix(c), scores, target).tolist() == ref_confmat(pred_list, tgt_list, c)
    assert_close_nan(_fed(TopKAccuracy(3), scores, target), ref_topk(scores, tgt_list, 3))
    r = _fed(ShotGroupAccuracy(COUNTS), scores, target)
    ref = ref_shot(pred_list, tgt_list, COUNTS)
    assert_close_nan([r.many, r.medium, r.few], [ref["many"], ref["medium"], ref["few"]])


def _fed(metric, scores, target, batch: int | None = None):
    if batch is None:
        metric.update(scores, target)
    else:
        for i in range(0, len(target), batch):
            metric.update(scores[i : i + batch], target[i : i + batch])
    return metric.compute()


def test_report_against_reference() -> None:
    scores, target = make_data(5, missing=True)
    c = scores.shape[1]
    pred_list, tgt_list = ref_argmax(scores), target.tolist()
    report = ClassificationReport(c, COUNTS)
    report.update(scores, target)
    out = report.compute()
    assert_close_nan(out["accuracy"], ref_accuracy(pred_list, tgt_list))
    assert_close_nan(out["balanced_accuracy"], ref_balanced(pred_list, tgt_list, c))
    assert_close_nan(out["per_class_accuracy"], ref_per_class(pred_list, tgt_list, c))
    ref = ref_shot(pred_list, tgt_list, COUNTS)
    for group in SHOT_GROUPS:
        assert_close_nan(out[f"{group}_accuracy"], ref[group])
    assert (out["num_many_classes"], out["num_medium_classes"], out["num_few_classes"]) == (3, 3, 2)
    assert_close_nan(out["top5_accuracy"], ref_topk(scores, tgt_list, 5))
    assert out["num_samples"] == len(tgt_list)
    assert isinstance(out["accuracy"], float) and isinstance(out["per_class_accuracy"], list)
    functional = classification_report(scores, target, class_counts=COUNTS)
    assert_close_nan(functional["per_class_accuracy"], out["per_class_accuracy"])
    assert functional.keys() == out.keys()


def test_report_keys_without_counts_or_top5() -> None:
    scores, target = make_data(0, c=5)
    out = classification_report(scores, target)
    assert "many_accuracy" not in out and "top5_accuracy" not in out
    assert set(out) == {"accuracy", "balanced_accuracy", "per_class_accuracy", "num_samples"}
    out = classification_report(scores, target, top_k=2)
    assert "top2_accuracy" in out
    out = classification_report(scores.argmax(1), target, num_classes=5, top_k=None)
    assert_close_nan(out["accuracy"], float(accuracy(scores, target)))
    with pytest.raises(ValueError, match=r"preds must be scores of shape \(N, 10\) to report top5_accuracy"):
        ClassificationReport(10).update(torch.tensor([1, 2]), torch.tensor([1, 2]))


# ---------------------------------------------------------------------------------------------------
# streaming, reset, NaN, state_dict


def _metrics(c: int) -> dict:
    return {
        "accuracy": Accuracy(),
        "top3": TopKAccuracy(3),
        "confmat": ConfusionMatrix(c),
        "per_class": PerClassAccuracy(c),
        "balanced": BalancedAccuracy(c),
        "shot": ShotGroupAccuracy(COUNTS),
        "report": ClassificationReport(c, COUNTS),
    }


def _same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, tuple):
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, equal_nan=True, rtol=1e-6, atol=1e-6)
    elif isinstance(a, (float, list)):
        assert_close_nan(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("seed", SEEDS)
def test_streaming_equals_one_shot(seed: int) -> None:
    scores, target = make_data(seed, missing=seed % 2 == 1)
    c = scores.shape[1]
    for name, metric in _metrics(c).items():
        one_shot = _fed(type(metric)(*_args(name, c)), scores, target)
        streamed = _fed(metric, scores, target, batch=17 + seed)
        _same(streamed, one_shot)


def _args(name: str, c: int) -> tuple:
    return {"accuracy": (), "top3": (3,), "shot": (COUNTS,), "report": (c, COUNTS)}.get(name, (c,))


def test_reset() -> None:
    scores, target = make_data(0)
    c = scores.shape[1]
    for name, metric in _metrics(c).items():
        first = _fed(metric, scores[:50], target[:50])
        metric.update(scores[50:], target[50:])
        metric.reset()
        _same(_fed(metric, scores[:50], target[:50]), first)
        metric.reset()
        if name == "confmat":
            assert int(metric.compute().sum()) == 0


def test_nan_for_empty_classes_and_groups() -> None:
    # class 2 has no test sample; class 0 is always right, class 1 half right
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 0, 1, 0])
    acc = per_class_accuracy(pred, target, num_classes=3)
    assert acc[:2].tolist() == [1.0, 0.5] and math.isnan(float(acc[2]))
    assert float(balanced_accuracy(pred, target, num_classes=3)) == pytest.approx(0.75)
    # no sample at all
    assert math.isnan(float(accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))))
    assert math.isnan(float(balanced_accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))))
    assert math.isnan(float(Accuracy().compute()))
    assert math.isnan(float(BalancedAccuracy(3).compute()))
    assert all(math.isnan(v) for v in PerClassAccuracy(3).compute().tolist())
    # groups: counts (500, 50, 5) -> one class per group; medium class 1 in test, few class 2 absent
    r = shot_group_accuracy(pred, target, [500, 50, 5])
    assert (float(r.many), float(r.medium)) == (1.0, 0.5)
    assert math.isnan(float(r.few))
    assert (r.num_many, r.num_medium, r.num_few) == (1, 1, 1)
    # a group with no class at all is NaN, not 0, and its size is 0
    r = shot_group_accuracy(pred, target, [500, 400, 300])
    assert math.isnan(float(r.medium)) and math.isnan(float(r.few))
    assert (r.num_many, r.num_medium, r.num_few) == (3, 0, 0)
    out = ClassificationReport(3, [500, 400, 300], top_k=None).compute()
    assert math.isnan(out["accuracy"]) and math.isnan(out["few_accuracy"]) and out["num_samples"] == 0
    cm = confusion_matrix(pred, target, num_classes=3, normalize="true")
    assert cm[0].tolist() == [1.0, 0.0, 0.0] and all(math.isnan(v) for v in cm[2].tolist())


def test_shot_group_thresholds_are_documented_convention() -> None:
    # OLTR: many > 100, few < 20, the boundaries 100 and 20 are medium
    counts = [101, 100, 21, 20, 19]
    assert shot_groups(counts).tolist() == [0, 1, 1, 1, 2]
    assert shot_groups(counts, inclusive=True).tolist() == [0, 0, 1, 2, 2]
    assert shot_groups(counts, many_threshold=50, few_threshold=50).tolist() == [0, 0, 2, 2, 2]
    assert shot_groups([0, 1000]).tolist() == [2, 0]


def test_state_dict_round_trip() -> None:
    scores, target = make_data(3)
    c = scores.shape[1]
    for name, metric in _metrics(c).items():
        metric.update(scores[:80], target[:80])
        state = metric.state_dict()
        clone = type(metric)(*_args(name, c))
        clone.load_state_dict(state)
        metric.update(scores[80:], target[80:])
        clone.update(scores[80:], target[80:])
        _same(clone.compute(), metric.compute())
    assert set(ShotGroupAccuracy(COUNTS).state_dict()) == {"confmat", "class_counts"}


def test_metric_follows_device_and_accepts_other_int_dtypes() -> None:
    scores, target = make_data(1)
    metric = PerClassAccuracy(scores.shape[1]).to(torch.float64)  # buffers keep their int dtype
    metric.update(scores.double(), target.int())
    torch.testing.assert_close(metric.compute(), per_class_accuracy(scores, target), equal_nan=True)
    assert float(accuracy(scores.half(), target.to(torch.uint8))) == pytest.approx(float(accuracy(scores, target)), abs=0.02)


# ---------------------------------------------------------------------------------------------------
# bad input


def test_bad_inputs() -> None:
    scores = torch.randn(4, 3)
    target = torch.tensor([0, 1, 2, 1])
    with pytest.raises(ValueError, match=r"target must have shape \(4,\) to match preds \(4, 3\); got shape \(5,\)"):
        accuracy(scores, torch.tensor([0, 1, 2, 1, 0]))
    with pytest.raises(ValueError, match=r"target labels must lie in \[0, 2\] for 3 classes; got values in \[0, 3\]"):
        per_class_accuracy(scores, torch.tensor([0, 1, 3, 1]))
    with pytest.raises(ValueError, match=r"target labels must lie in \[0, 2\] for 3 classes; got values in \[-1, 2\]"):
        confusion_matrix(torch.tensor([0, 1, 2, 1]), torch.tensor([0, -1, 2, 1]), num_classes=3)
    with pytest.raises(ValueError, match=r"preds labels must lie in \[0, 2\] for 3 classes; got values in \[0, 5\]"):
        balanced_accuracy(torch.tensor([0, 5, 2, 1]), target, num_classes=3)
    with pytest.raises(ValueError, match=r"preds must have num_classes = 4 columns; got shape \(4, 3\)"):
        PerClassAccuracy(4).update(scores, target)
    with pytest.raises(ValueError, match=r"num_classes must be given when preds are class predictions"):
        accuracy(torch.tensor([0, 1]), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match=r"preds of shape \(N,\) must hold integer class predictions; got dtype torch.float32"):
        accuracy(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), num_classes=2)
    with pytest.raises(TypeError, match=r"target must hold int64 class indices"):
        accuracy(scores, target.float())
    with pytest.raises(ValueError, match=r"preds must have shape \(N, C\) \(scores\) or \(N,\)"):
        accuracy(torch.zeros(2, 3, 4), target)
    with pytest.raises(ValueError, match=r"preds must be finite; got 1 NaN/Inf"):
        accuracy(torch.tensor([[0.0, float("nan")]]), torch.tensor([0]))
    with pytest.raises(TypeError, match=r"preds must be a torch.Tensor"):
        accuracy([[0.0, 1.0]], torch.tensor([0]))  # type: ignore[arg-type]
    from tailwise.metrics import top_k_accuracy

    with pytest.raises(ValueError, match=r"k must be at most the number of classes C = 3; got k=5"):
        top_k_accuracy(scores, target, k=5)
    with pytest.raises(ValueError, match=r"k must be an integer >= 1; got 0"):
        TopKAccuracy(0)
    with pytest.raises(ValueError, match=r"preds must be scores of shape \(N, C\) for top-k accuracy; got \(4,\)"):
        top_k_accuracy(target, target, k=1)
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 1; got 0"):
        ConfusionMatrix(0)
    with pytest.raises(TypeError, match=r"num_classes must be an integer >= 1; got 2.0"):
        PerClassAccuracy(2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"normalize must be one of \[None, 'true', 'pred', 'all'\]; got 'rows'"):
        confusion_matrix(scores, target, normalize="rows")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"few_threshold must be <= many_threshold \(inclusive=False\); got few_threshold=200"):
        shot_groups(COUNTS, few_threshold=200)
    with pytest.raises(ValueError, match=r"few_threshold must be < many_threshold \(inclusive=True\)"):
        shot_groups(COUNTS, many_threshold=20, few_threshold=20, inclusive=True)
    with pytest.raises(ValueError, match=r"class_counts must be non-negative; got negative counts for classes \[1\]"):
        ShotGroupAccuracy([10, -1, 3])
    with pytest.raises(ValueError, match=r"preds must have num_classes = 8 columns; got shape \(4, 3\)"):
        shot_group_accuracy(scores, target, COUNTS)
    with pytest.raises(ValueError, match=r"class_counts must have one entry per class \(3\); got 8 entries"):
        ClassificationReport(3, COUNTS)
    with pytest.raises(ValueError, match=r"average must be one of \['macro', 'micro'\]; got 'weighted'"):
        ShotGroupAccuracy(COUNTS, average="weighted")  # type: ignore[arg-type]
    # value checks can be switched off for tight loops (shape checks still run)
    with validation_disabled():
        accuracy(scores, torch.tensor([0, 1, 2, 1]))


# ---------------------------------------------------------------------------------------------------
# distributed: two gloo processes, each with a different part of the data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _all_results(scores: torch.Tensor, target: torch.Tensor, batch: int) -> dict:
    c = scores.shape[1]
    return {name: _fed(metric, scores, target, batch=batch) for name, metric in _metrics(c).items()}


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        scores, target = make_data(11, n=203, missing=True)
        cut = 90  # unequal shards
        part = slice(0, cut) if rank == 0 else slice(cut, None)
        results = _all_results(scores[part], target[part], batch=32)
        # compute() twice without a new update must not sum the states again
        results["second_call"] = _metrics_second_call(scores[part], target[part])
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        shutdown_distributed()


def _metrics_second_call(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    metric = ConfusionMatrix(scores.shape[1])
    metric.update(scores, target)
    metric.compute()
    return metric.compute()


def test_ddp_two_processes_match_single_process(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    scores, target = make_data(11, n=203, missing=True)
    expected = _all_results(scores, target, batch=64)
    expected["second_call"] = confusion_matrix(scores, target)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert got.keys() == expected.keys()
        for name in expected:
            _same(got[name], expected[name])


def _ddp_update_after_compute_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        scores, target = make_data(12, n=64)
        part = slice(rank * 32, (rank + 1) * 32)
        metric = ConfusionMatrix(scores.shape[1])
        metric.update(scores[part][:16], target[part][:16])
        metric.compute()  # a mid-epoch look at the value
        metric.update(scores[part][16:], target[part][16:])
        torch.save(metric.compute(), Path(out_dir) / f"rank{rank}.pt")
    finally:
        shutdown_distributed()


def test_ddp_update_after_compute(tmp_path: Path) -> None:
    mp.spawn(_ddp_update_after_compute_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    scores, target = make_data(12, n=64)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert got.tolist() == confusion_matrix(scores, target).tolist()
