"""The ``tailwise`` command line: listing, usage errors (exit code 2, one line) and a tiny train/eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tailwise.cli.main import main


def test_recipes_and_datasets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "ce-drw" in out and "ce " in out
    assert main(["datasets"]) == 0
    names = capsys.readouterr().out.split()
    assert {"mnist", "fashion-mnist", "cifar10", "cifar10n", "mnist1d"} <= set(names)


def test_help_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in (["--help"], ["train", "--help"], ["demo", "--help"], ["eval", "--help"]):
        with pytest.raises(SystemExit) as info:
            main(cmd)
        assert info.value.code == 0
    assert "--recipe" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--recipe", "nope", "--data", "mnist1d"], "unknown recipe 'nope'"),
        (["train", "--recipe", "ce", "--data", "nope"], "unknown dataset 'nope'"),
        (["train", "--recipe", "ce", "--data", "mnist1d", "--set", "train.epochz=1"], "unknown key(s) ['epochz']"),
        (["train", "--recipe", "ce", "--data", "mnist1d", "--set", "epochs"], "override must look like key=value"),
        (["eval", "--run", "/nonexistent/run"], "no config.json in run folder"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tailwise: error: ")
    assert message in err
    assert len(err.splitlines()) == 1


def test_train_then_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    argv = ["train", "--recipe", "ce", "--data", "mnist1d", "--out", str(run),
            "--set", "data.options={num_samples: 1000}", "--set", "data.long_tail=null", "--set", "model=mlp",
            "--set", "train.epochs=1", "--set", "train.batch_size=100", "--set", "train.progress=false"]
    assert main(argv) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["eval", "--run", str(run), "--checkpoint", "last"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["split"] == "test" and 0.0 <= report["accuracy"] <= 1.0
