"""Trainer: a short run end to end, kill-and-resume equality, and bad configurations."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tailwise.train.checkpoint import load_checkpoint
from tailwise.train.config import ConfigError, apply_overrides, config_from_dict, load_recipe
from tailwise.train.trainer import Trainer

SMALL = [
    "data.name=mnist1d",
    "data.options={num_samples: 1500}",
    "data.long_tail={profile: exp, rho: 10}",
    "data.val_fraction=0.2",
    "model=mlp",
    "train.batch_size=64",
    "train.progress=false",
    "train.threads=1",
    "schedule.warmup_epochs=1",
    "schedule.milestones=[2]",
    "schedule.gamma=0.1",
    "optim.lr=0.05",
]


def small_config(recipe: str = "ce", epochs: int = 3, extra: tuple[str, ...] = ()) -> object:
    return config_from_dict(apply_overrides(load_recipe(recipe), [*SMALL, f"train.epochs={epochs}", *extra]))


def test_short_run_writes_the_run_folder(tmp_path: Path) -> None:
    cfg = small_config("ce-drw", epochs=3, extra=("weights.switch_epoch=2",))
    trainer = Trainer(cfg, run_dir=tmp_path / "run", log=None)
    summary = trainer.fit()
    run = tmp_path / "run"
    for name in ("config.json", "data.json", "metrics.jsonl", "summary.json", "last.pt", "best.pt"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert records[0]["lr"] == pytest.approx(0.05) and records[2]["lr"] == pytest.approx(0.005)
    assert {"val_accuracy", "val_balanced_accuracy", "train_loss"} <= set(records[0])
    assert 0.0 <= summary["test_best"]["accuracy"] <= 1.0
    assert summary["best_epoch"] in (0, 1, 2)
    assert set(summary) >= {"test_last", "test_best", "best_val_metric"}
    # the DRW schedule reached the loss: uniform weights before epoch 2, class-balanced from it
    w = trainer.loss.weight
    assert w is not None and not torch.allclose(w, torch.ones_like(w))
    assert json.loads((run / "config.json").read_text())["weights"]["name"] == "drw"


def _train_cmd(run_dir: Path, epochs: int, resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "tailwise.cli.main", "train", "--recipe", "ce", "--data", "mnist1d", "--out", str(run_dir)]
    for item in [*SMALL, f"train.epochs={epochs}"]:
        cmd += ["--set", item]
    if resume:
        cmd.append("--resume")
    return cmd


def test_kill_and_resume_gives_identical_weights(tmp_path: Path) -> None:
    epochs = 5
    reference = Trainer(small_config("ce", epochs), run_dir=tmp_path / "ref", log=None)
    reference.fit()
    ref_state = load_checkpoint(tmp_path / "ref" / "last.pt")["model"]

    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(_train_cmd(run, epochs), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    metrics = run / "metrics.jsonl"
    while time.time() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            break
        if proc.poll() is not None:
            pytest.fail(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = load_checkpoint(run / "last.pt")["epoch"]
    assert done < epochs - 1, "the run finished before it could be killed"

    resumed = subprocess.run(_train_cmd(run, epochs, resume=True), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    final = load_checkpoint(run / "last.pt")
    assert final["epoch"] == epochs - 1
    for key, value in ref_state.items():
        assert torch.equal(value, final["model"][key]), key
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(epochs))


def test_bad_configurations(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train.batch_size must be >= 1; got 0"):
        Trainer(small_config(extra=("train.batch_size=0",)), run_dir=tmp_path, log=None)
    with pytest.raises(ValueError, match=r"unknown loss 'nope'; expected one of \["):
        Trainer(small_config(extra=("loss=nope",)), run_dir=tmp_path, log=None)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['bogus'\] for loss 'ce'; valid parameters: "):
        Trainer(small_config(extra=("loss.bogus=1",)), run_dir=tmp_path, log=None)
    with pytest.raises(ConfigError, match=r"optim.name must be one of \['sgd', 'adam', 'adamw'\]; got 'rmsprop'"):
        Trainer(small_config(extra=("optim.name=rmsprop",)), run_dir=tmp_path, log=None)
    with pytest.raises(FileNotFoundError, match=r"checkpoint file not found"):
        Trainer(small_config(), run_dir=tmp_path, resume=tmp_path / "missing.pt", log=None)


def test_nan_loss_stops_without_stepping(tmp_path: Path) -> None:
    trainer = Trainer(small_config(epochs=1), run_dir=tmp_path, log=None)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train_x = trainer.train_x.clone()
    trainer.train_x[:] = float("nan")
    trainer.epoch = 0
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 0, batch 0; the step was not applied"):
        trainer.train_epoch(0)
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[key]) or not value.is_floating_point(), key


def test_susceptibility_is_logged_and_resumable(tmp_path: Path) -> None:
    cfg = small_config(epochs=2, extra=("train.susceptibility={batch_size: 32}",))
    trainer = Trainer(cfg, run_dir=tmp_path, log=None)
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("zeta" in r and "susceptibility_r" in r for r in records)
    assert records[0]["zeta"] == pytest.approx(records[0]["susceptibility_r"])
    state = load_checkpoint(tmp_path / "last.pt")["components"]["susceptibility"]
    assert state is not None
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['size'\] in train.susceptibility"):
        Trainer(small_config(extra=("train.susceptibility={size: 3}",)), run_dir=tmp_path / "x", log=None)


def test_grad_clipping_and_drop_last(tmp_path: Path) -> None:
    trainer = Trainer(small_config(epochs=1, extra=("train.grad_clip_norm=0.001", "train.drop_last=true")),
                      run_dir=tmp_path, log=None)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer._set_epoch(0)
    trainer.train_epoch(0)
    # lr 0.05, momentum 0.9 (a buffer at most 10x one step's gradient), gradient norm clipped to 1e-3,
    # plus the unclipped weight decay 2e-4 * |w|: a bound on how far any parameter can move
    steps = len(trainer.train_y) // 64
    w_max = max(float(b.abs().max()) for b in before) + 1.0
    moved = max(float((p.detach() - b).abs().max()) for p, b in zip(trainer.model.parameters(), before))
    assert 0 < moved <= 0.05 * steps * 10 * (1e-3 + 2e-4 * w_max)
    unclipped = Trainer(small_config(epochs=1, extra=("train.drop_last=true",)), run_dir=tmp_path / "u", log=None)
    unclipped._set_epoch(0)
    unclipped.train_epoch(0)
    moved_free = max(float((p.detach() - b).abs().max()) for p, b in zip(unclipped.model.parameters(), before))
    assert moved_free > 10 * moved
    with pytest.raises(ConfigError, match=r"train.grad_clip_norm must be > 0 or null; got -1.0"):
        Trainer(small_config(extra=("train.grad_clip_norm=-1",)), run_dir=tmp_path / "x", log=None)


@pytest.mark.parametrize(("recipe", "extra"), [("cals", ()), ("ldam-drw", ("weights.switch_epoch=1",))])
def test_compiled_steps_train_like_eager_ones(tmp_path: Path, recipe: str, extra: tuple[str, ...]) -> None:
    """``train.compile`` (traced without code generation here): the same weights as eager steps.

    CALS updates its multipliers in place after every epoch and DRW replaces the loss's weights at the
    switch: the compiled step follows both.
    """
    states = []
    for setting in ("false", "aot_eager"):
        torch._dynamo.reset()
        cfg = small_config(recipe, epochs=2, extra=(*extra, f"train.compile={setting}"))
        counters = torch._dynamo.utils.counters
        counters.clear()
        trainer = Trainer(cfg, run_dir=tmp_path / setting, log=None)
        trainer.fit()
        states.append(trainer.model.state_dict())
        if setting != "false":  # the model and the loss traced as one graph
            assert counters["stats"]["unique_graphs"] >= 1
            assert not counters["graph_break"], dict(counters["graph_break"])
    for key, value in states[0].items():
        torch.testing.assert_close(states[1][key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_compile_setting_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train.compile must be true, false or one of \[.*'inductor'.*got 'fast'"):
        Trainer(small_config("ce", epochs=1, extra=("train.compile=fast",)), run_dir=tmp_path, log=None)
