"""Atomic checkpoints, weights_only loading and clear errors for corrupt files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tailwise.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_round_trip(tmp_path: Path) -> None:
    state = {"epoch": 3, "model": {"w": torch.randn(3, 2)}, "history": [{"a": 1.0}], "rng": torch.get_rng_state()}
    path = save_checkpoint(state, tmp_path / "ck" / "last.pt")
    back = load_checkpoint(path)
    assert back["epoch"] == 3
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert back["history"] == [{"a": 1.0}]
    assert not list((tmp_path / "ck").glob("*.tmp"))


def test_overwrite_keeps_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    for epoch in range(3):
        save_checkpoint({"epoch": epoch}, path)
        assert load_checkpoint(path)["epoch"] == epoch


def test_failed_write_leaves_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint({"epoch": 2, "bad": Unpicklable()}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"checkpoint file not found: .*nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"is corrupt or unreadable"):
        load_checkpoint(bad)
    truncated = tmp_path / "trunc.pt"
    save_checkpoint({"epoch": 1, "w": torch.randn(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"is corrupt or unreadable"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"epoch": 1}, foreign)
    with pytest.raises(CheckpointError, match=r"not a tailwise checkpoint"):
        load_checkpoint(foreign)


def test_arbitrary_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "tailwise-checkpoint-v1", "obj": Path("x")}, path)
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_checkpoint(path)
