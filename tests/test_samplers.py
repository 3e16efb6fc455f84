"""Class-aware samplers: class-probability engine, class-balanced, square-root, Resample, CDB-S."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tailwise.class_counts import effective_number_weights
from tailwise.registry import SAMPLERS
from tailwise.samplers import (
    CDBSampler,
    ClassBalancedSampler,
    ClassProbabilitySampler,
    EffectiveNumberResampler,
    SquareRootSampler,
)
from tailwise.train.distributed import shutdown_distributed

COUNTS = [400, 200, 100, 50, 10]


def _labels(counts: list[int] = COUNTS, seed: int = 0) -> torch.Tensor:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))]


def _class_freq(sampler: ClassProbabilitySampler, labels: torch.Tensor, epochs: int = 4) -> torch.Tensor:
    seen = []
    for e in range(epochs):
        sampler.set_epoch(e)
        seen.append(labels[torch.tensor(list(sampler))])
    return torch.bincount(torch.cat(seen), minlength=len(COUNTS)).double() / sum(len(s) for s in seen)


def _val_logits(num_classes: int, acc: list[float], per_class: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation logits whose per-class accuracy is exactly ``acc``."""
    rows, target = [], []
    for c in range(num_classes):
        right = round(acc[c] * per_class)
        for i in range(per_class):
            pred = c if i < right else (c + 1) % num_classes
            rows.append(torch.nn.functional.one_hot(torch.tensor(pred), num_classes).double() * 5)
            target.append(c)
    return torch.stack(rows), torch.tensor(target)


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (lambda y: ClassBalancedSampler(y), torch.full((5,), 0.2, dtype=torch.float64)),
        (lambda y: SquareRootSampler(y), torch.tensor(COUNTS, dtype=torch.float64).sqrt()),
        (lambda y: EffectiveNumberResampler(y),
         torch.tensor(COUNTS, dtype=torch.float64) * effective_number_weights(COUNTS, 0.9999)),
        (lambda y: ClassProbabilitySampler(y, [0.1, 0.2, 0.3, 0.2, 0.2]), torch.tensor([0.1, 0.2, 0.3, 0.2, 0.2])),
    ],
)
def test_class_frequencies_match_probabilities(factory, expected) -> None:
    labels = _labels()
    sampler = factory(labels)
    expected = expected.double() / expected.sum()
    torch.testing.assert_close(sampler.class_probs, expected)
    freq = _class_freq(sampler, labels)
    assert torch.allclose(freq, expected, atol=0.03), (freq, expected)


def test_uniform_within_class() -> None:
    labels = _labels([30, 3])
    sampler = ClassBalancedSampler(labels, num_samples=6000)
    idx = torch.tensor(list(sampler))
    tail = idx[labels[idx] == 1]
    counts = torch.bincount(tail, minlength=labels.numel())[labels == 1]
    assert counts.min() > 0.8 * counts.float().mean()


def test_determinism_per_seed_and_epoch() -> None:
    labels = _labels()
    a, b = SquareRootSampler(labels, seed=3), SquareRootSampler(labels, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)
    assert list(SquareRootSampler(labels, seed=4)) != list(SquareRootSampler(labels, seed=3))
    # resume: state_dict of a sampler at epoch 2 replays epoch 2
    c = SquareRootSampler(labels, seed=0)
    c.load_state_dict(a.state_dict())
    assert list(c) == list(a)


def test_length_and_num_samples() -> None:
    labels = _labels()
    assert len(ClassBalancedSampler(labels)) == labels.numel()
    s = ClassBalancedSampler(labels, num_samples=101, num_replicas=4, rank=1)
    assert len(s) == 26 and len(list(s)) == 26
    s = ClassBalancedSampler(labels, num_samples=101, num_replicas=4, rank=3, drop_last=True)
    assert len(s) == 25 and len(list(s)) == 25


@pytest.mark.parametrize("n", [100, 101, 103])
def test_distributed_shards_disjoint_and_covering(n: int) -> None:
    labels = _labels()
    world = 4
    shards = [ClassBalancedSampler(labels, num_samples=n, num_replicas=world, rank=r, seed=5) for r in range(world)]
    for s in shards:
        s.set_epoch(7)
    glob = shards[0].global_indices()
    padded = torch.cat([glob, glob[: (-n) % world]])
    for r, s in enumerate(shards):
        assert torch.equal(s.indices(), padded[r::world])
    # positions are disjoint and, together, cover the padded global sequence
    positions = sorted(p for r in range(world) for p in range(r, padded.numel(), world))
    assert positions == list(range(padded.numel()))
    interleaved = torch.stack([s.indices() for s in shards], dim=1).flatten()
    assert torch.equal(interleaved, padded)


def test_cdb_sampler_probabilities_follow_difficulty() -> None:
    labels = _labels()
    s = CDBSampler(labels, tau=1.0)
    torch.testing.assert_close(s.class_probs, torch.full((5,), 0.2, dtype=torch.float64))
    assert torch.allclose(CDBSampler(labels, initial="instance").class_probs,
                          torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS))
    acc = [0.9, 0.8, 0.5, 0.25, 0.0]
    logits, target = _val_logits(5, acc)
    s.update_from_validation(logits, target, epoch=0)
    d = 1 - torch.tensor(acc, dtype=torch.float64)
    torch.testing.assert_close(s.difficulty, d)
    torch.testing.assert_close(s.class_probs, d / d.sum())
    freq = _class_freq(s, labels)
    assert torch.allclose(freq, d / d.sum(), atol=0.03)
    # dynamic tau follows the CDB-W formula
    dyn = CDBSampler(labels, tau="dynamic", tau_rule="imagenet")
    dyn.update_from_validation(logits, target, 0)
    from tailwise.functional import cdb_weights

    w = cdb_weights(d, "dynamic", "imagenet", "epsilon")
    torch.testing.assert_close(dyn.class_probs, w / w.sum())


def test_cdb_sampler_zero_difficulty() -> None:
    labels = _labels()
    logits, target = _val_logits(5, [1.0, 0.5, 0.5, 0.5, 0.5])
    eps = CDBSampler(labels, tau=1.0)
    eps.update_from_validation(logits, target, 0)
    assert float(eps.class_probs[0]) > 0
    official = CDBSampler(labels, tau=1.0, zero_weight="official")
    official.update_from_validation(logits, target, 0)
    assert float(official.class_probs[0]) == 0.0
    perfect_logits, perfect_target = _val_logits(5, [1.0] * 5)
    with pytest.raises(ValueError, match="zero_weight='epsilon'"):
        official.update_from_validation(perfect_logits, perfect_target, 1)
    eps.update_from_validation(perfect_logits, perfect_target, 1)
    torch.testing.assert_close(eps.class_probs, torch.full((5,), 0.2, dtype=torch.float64))


def test_cdb_sampler_state_dict_resume() -> None:
    labels = _labels()
    a = CDBSampler(labels, tau=1.0, seed=11)
    logits, target = _val_logits(5, [0.9, 0.8, 0.5, 0.25, 0.1])
    a.update_from_validation(logits, target, 0)
    a.set_epoch(1)
    b = CDBSampler(labels, tau=1.0)
    b.load_state_dict(a.state_dict())
    assert list(a) == list(b)
    torch.testing.assert_close(b.class_probs, a.class_probs)


def test_registry_names() -> None:
    labels = _labels()
    for name, cls in [("class_balanced", ClassBalancedSampler), ("sqrt", SquareRootSampler),
                      ("resample", EffectiveNumberResampler), ("cdb", CDBSampler)]:
        s = SAMPLERS.build(name, {}, labels=labels, num_replicas=2, rank=1, seed=3, generator=None)
        assert isinstance(s, cls) and s.rank == 1 and s.num_replicas == 2 and s.seed == 3


def test_bad_inputs() -> None:
    labels = _labels()
    with pytest.raises(ValueError, match="labels must be a non-empty 1-D tensor"):
        ClassBalancedSampler(torch.rand(10))
    with pytest.raises(ValueError, match="class_probs must have one entry per class"):
        ClassProbabilitySampler(labels, [0.5, 0.5], num_classes=5)
    with pytest.raises(ValueError, match="class_probs must be finite and non-negative"):
        ClassProbabilitySampler(labels, [0.5, -0.1, 0.2, 0.2, 0.2])
    with pytest.raises(ValueError, match="no training sample"):
        ClassProbabilitySampler(labels, [0.2] * 6)
    with pytest.raises(ValueError, match="rank must lie in"):
        ClassBalancedSampler(labels, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        ClassBalancedSampler(labels, num_samples=0)
    with pytest.raises(ValueError, match="initial must be one of"):
        CDBSampler(labels, initial="random")
    with pytest.raises(ValueError, match="class_accuracy must have shape"):
        CDBSampler(labels).update_from_accuracy([0.5, 0.5])


def _ddp_cdb_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        labels = _labels()
        sampler = CDBSampler(labels, tau=1.0, num_replicas=world, rank=rank, seed=9, num_samples=101)
        logits, target = _val_logits(5, [0.9, 0.8, 0.5, 0.25, 0.1])  # the gathered validation split
        sampler.update_from_validation(logits, target, 0)
        sampler.set_epoch(1)
        local = torch.tensor(list(sampler))
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local)
        torch.save({"global": sampler.global_indices(), "parts": parts}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        shutdown_distributed()


def test_ddp_cdb_sampler_two_processes(tmp_path: Path) -> None:
    world = 2
    mp.spawn(_ddp_cdb_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(world))
    assert torch.equal(r0["global"], r1["global"])  # same global sequence on both ranks
    glob = r0["global"]
    padded = torch.cat([glob, glob[:1]])
    assert torch.equal(r0["parts"][0], padded[0::2]) and torch.equal(r0["parts"][1], padded[1::2])
    interleaved = torch.stack(r0["parts"], dim=1).flatten()
    assert torch.equal(interleaved, padded)  # disjoint positions covering the sequence
