"""Two-process DDP on CPU (gloo): same statistics on both ranks, same trajectory as one process."""

from __future__ import annotations

import faulthandler
import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tailwise.train.config import apply_overrides, config_from_dict, load_recipe
from tailwise.train.distributed import shutdown_distributed
from tailwise.train.trainer import Trainer

OVERRIDES = [
    "data.name=mnist1d",
    "data.options={num_samples: 1000}",
    "data.long_tail=null",
    "data.val_per_class=16",
    "model=mlp",
    "train.epochs=2",
    "train.batch_size=64",
    "train.progress=false",
    "train.threads=1",
    "train.plots=false",
    "schedule.warmup_epochs=0",
    "optim.lr=0.05",
]


def _config(extra: tuple[str, ...] = ()) -> object:
    return config_from_dict(apply_overrides(load_recipe("ce"), [*OVERRIDES, *extra]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, extra: tuple[str, ...] = ()) -> None:
    faulthandler.enable()  # an abort in a rank prints that rank's Python stack
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        trainer = Trainer(_config(extra), run_dir=Path(out) / "run", log=None)
        summary = trainer.fit()
        val, _ = trainer.evaluate("val")
        result = {
            "train_loss": [r["train_loss"] for r in trainer.history],
            "val_per_class": val["per_class_accuracy"],
            "test_accuracy": summary["test_last"]["accuracy"],
            "sampler_len": len(trainer.sampler),
        }
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
        trainer.close()
        del trainer
    finally:
        shutdown_distributed()
    # Every result is on disk and the group is torn down; leave without the interpreter's finalisation,
    # where gloo's transport threads can still race the teardown of a spawned worker.
    os._exit(0)


@pytest.mark.parametrize("extra", [(), ("train.compile=aot_eager",)], ids=["eager", "compiled"])
def test_two_process_ddp_matches_one_process(tmp_path: Path, extra: tuple[str, ...]) -> None:
    """Compiled steps (traced, no code generation) under DDP follow the same trajectory as eager ones."""
    single = Trainer(_config(), run_dir=tmp_path / "single", log=None)
    assert len(single.train_y) % 64 == 0, "the comparison needs full global batches"
    single.fit()
    single_loss = [r["train_loss"] for r in single.history]
    single_val, _ = single.evaluate("val")

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), extra), nprocs=2, join=True)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["sampler_len"] == r1["sampler_len"] == len(single.train_y) // 2
    assert r0["val_per_class"] == r1["val_per_class"]
    assert r0["train_loss"] == r1["train_loss"]
    torch.testing.assert_close(torch.tensor(r0["train_loss"]), torch.tensor(single_loss), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(r0["val_per_class"]), torch.tensor(single_val["per_class_accuracy"]),
                               rtol=0, atol=1e-6)


class _FakeStore:
    """Counts ``add`` calls; another rank's reports arrive after ``delay`` polls."""

    def __init__(self, calls: list[str], others: int, delay: int) -> None:
        self.calls, self.others, self.delay, self.value, self.polls = calls, others, delay, 0, 0

    def add(self, key: str, amount: int) -> int:
        assert key == "tailwise/shutdown"
        self.calls.append(f"add{amount}")
        self.value += amount
        if amount == 0:
            self.polls += 1
            if self.polls == self.delay:
                self.value += self.others
        return self.value


def _patch_group(monkeypatch: pytest.MonkeyPatch, calls: list[str], rank: int, store: object) -> None:
    import tailwise.train.distributed as twd

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: 2)
    monkeypatch.setattr(dist, "get_rank", lambda *a, **k: rank)
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a, **k: calls.append("destroy"))
    monkeypatch.setattr(twd, "_default_store", lambda: store)


def test_shutdown_waits_for_every_rank_unless_an_exception_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    _patch_group(monkeypatch, calls, rank=1, store=_FakeStore(calls, others=1, delay=1))
    shutdown_distributed()
    assert calls == ["barrier", "destroy", "add1"]  # a non-hosting rank reports and returns
    calls.clear()
    with pytest.raises(RuntimeError, match="rank failed"):
        try:
            raise RuntimeError("rank failed")
        finally:
            shutdown_distributed()  # the other ranks may never reach a barrier: none here
    assert calls == ["destroy"]


def test_shutdown_rank0_outlives_the_other_ranks_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    _patch_group(monkeypatch, calls, rank=0, store=_FakeStore(calls, others=1, delay=3))
    shutdown_distributed()
    assert calls == ["barrier", "destroy", "add1", "add0", "add0", "add0"]  # until both ranks reported
    calls.clear()
    _patch_group(monkeypatch, calls, rank=0, store=_FakeStore(calls, others=0, delay=1))
    shutdown_distributed(timeout=0.05)  # a rank that never reports: rank 0 gives up after the timeout
    assert calls[:3] == ["barrier", "destroy", "add1"] and set(calls[3:]) == {"add0"}


def test_close_drops_the_ddp_wrapper(tmp_path: Path) -> None:
    trainer = Trainer(_config(), run_dir=tmp_path, log=None)
    trainer.ddp_model = torch.nn.Sequential(trainer.model)  # stands in for the wrapper
    trainer.close()
    assert trainer.ddp_model is trainer.model
    trainer.close()
    assert trainer.ddp_model is trainer.model
