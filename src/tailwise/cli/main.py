"""The ``tailwise`` command: ``demo | train | eval | certify | recipes | datasets``.

Usage and configuration errors print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tailwise.train.checkpoint import CheckpointError
from tailwise.train.config import ConfigError

__all__ = ["main"]

USAGE_ERRORS = (ConfigError, CheckpointError, FileNotFoundError, ValueError, TypeError)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", required=True, help="recipe name (see `tailwise recipes`) or path to a YAML file")
    p.add_argument("--data", required=True, help="dataset name (see `tailwise datasets`)")
    p.add_argument("--data-dir", default=None, help="folder holding the dataset files (default: ../shared/data if present)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.epochs=10 --set loss.max_margin=0.3 (repeatable)")
    p.add_argument("--out", default=None, help="run folder (default: <train.output_dir>/<recipe>-<data>-seed<seed>)")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue from a checkpoint path, or from the run folder's last.pt when given without a value")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tailwise", description="Train classifiers on imperfect data.")
    sub = parser.add_subparsers(dest="command", metavar="{demo,train,eval,certify,recipes,datasets}")

    demo = sub.add_parser("demo", help="long-tailed MNIST-1D: every method for a few epochs, offline, prints a table")
    demo.add_argument("--epochs", type=int, default=None, help="epochs per method (default: the demo's setting)")
    demo.add_argument("--out", default="runs/demo", help="folder for the demo's runs, table and plots")
    demo.add_argument("--methods", default=None, help="comma-separated subset of the demo's recipes")

    train = sub.add_parser("train", help="train a recipe on a dataset")
    _add_train_args(train)

    ev = sub.add_parser("eval", help="evaluate a finished or interrupted run folder on a split")
    ev.add_argument("--run", required=True, help="run folder written by `tailwise train`")
    ev.add_argument("--split", default="test", choices=["val", "test"])
    ev.add_argument("--checkpoint", default="best", choices=["best", "last"])

    cert = sub.add_parser("certify", help="certify a trained run with randomized smoothing on a test subset")
    cert.add_argument("--run", required=True, help="run folder written by `tailwise train`")
    cert.add_argument("--sigma", type=float, default=None, help="noise level (default: the run's training sigma)")
    cert.add_argument("--n0", type=int, default=100, help="selection samples")
    cert.add_argument("--n", type=int, default=100_000, help="estimation samples")
    cert.add_argument("--alpha", type=float, default=0.001, help="failure probability")
    cert.add_argument("--batch", type=int, default=1000, help="noisy copies per forward pass")
    cert.add_argument("--num-images", type=int, default=500, help="evenly spaced test images to certify")
    cert.add_argument("--checkpoint", default="best", choices=["best", "last"])
    cert.add_argument("--seed", type=int, default=0)
    cert.add_argument("--out", default=None, help="output folder (default: <run>/certify-sigma<sigma>)")

    sub.add_parser("recipes", help="list the shipped recipes")
    sub.add_parser("datasets", help="list the dataset names")
    return parser


def _cmd_train(args: argparse.Namespace) -> int:
    from tailwise.train.config import apply_overrides, config_from_dict, load_recipe
    from tailwise.train.distributed import shutdown_distributed
    from tailwise.train.trainer import Trainer

    values = load_recipe(args.recipe)
    values = apply_overrides(values, [f"data.name={args.data}"] + ([f"data.data_dir={args.data_dir}"] if args.data_dir else []))
    values = apply_overrides(values, args.overrides)
    cfg = config_from_dict(values)
    trainer = Trainer(cfg, run_dir=args.out, resume=args.resume)
    try:
        summary = trainer.fit()
    except (FloatingPointError, RuntimeError, ValueError) as err:
        trainer.close()
        shutdown_distributed()  # inside the handler: no barrier, the other ranks may have failed too
        if os.environ.get("TAILWISE_DEBUG"):
            raise
        print(f"tailwise: training failed: {err}", file=sys.stderr)
        return 1
    if trainer.dist.is_main:
        best, last = summary["test_best"], summary["test_last"]
        print(f"run folder: {trainer.run_dir}")
        print(f"test accuracy  best-on-val (epoch {summary['best_epoch']}): {best['accuracy']:.4f}  last: {last['accuracy']:.4f}")
        print(f"test balanced  best-on-val: {best['balanced_accuracy']:.4f}  last: {last['balanced_accuracy']:.4f}")
    trainer.close()
    shutdown_distributed()  # under torchrun: every rank reaches this point, then the group is destroyed
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from tailwise.train.checkpoint import load_checkpoint
    from tailwise.train.config import config_from_dict
    from tailwise.train.trainer import Trainer

    run = Path(args.run)
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no config.json in run folder {run}")
    cfg = config_from_dict(json.loads(cfg_path.read_text(encoding="utf-8")))
    cfg.train.progress = False
    trainer = Trainer(cfg, run_dir=run, log=None)
    ckpt = load_checkpoint(run / f"{args.checkpoint}.pt")
    trainer.model.load_state_dict(ckpt["model"])
    metrics, _ = trainer.evaluate(args.split)
    print(json.dumps({"run": str(run), "checkpoint": args.checkpoint, "epoch": ckpt["epoch"], "split": args.split,
                      **metrics}, indent=2))
    return 0


def _cmd_recipes() -> int:
    from tailwise.train.config import list_recipes

    for name, text in list_recipes().items():
        print(f"{name:24s} {text}")
    return 0


def _cmd_datasets() -> int:
    from tailwise.data import DATASETS

    for name in DATASETS.names() if hasattr(DATASETS, "names") else sorted(DATASETS):
        print(name)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tailwise`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "demo":
            from tailwise.cli.demo import run_demo

            return run_demo(epochs=args.epochs, out=Path(args.out),
                            methods=args.methods.split(",") if args.methods else None)
        if args.command == "train":
            return _cmd_train(args)
        if args.command == "eval":
            return _cmd_eval(args)
        if args.command == "certify":
            from tailwise.cli.certify import certify_run

            result = certify_run(Path(args.run), sigma=args.sigma, n0=args.n0, n=args.n, alpha=args.alpha,
                                 batch_size=args.batch, num_images=args.num_images, checkpoint=args.checkpoint,
                                 seed=args.seed, out=Path(args.out) if args.out else None)
            print(result["table"])
            print(f"written to {result['out']}")
            return 0
        if args.command == "recipes":
            return _cmd_recipes()
        return _cmd_datasets()
    except USAGE_ERRORS as err:
        print(f"tailwise: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tailwise: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
