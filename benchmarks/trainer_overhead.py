"""Trainer overhead: one trainer epoch against a bare training loop on the same batches.

ResNet-32, batch 128, CIFAR-size (3x32x32) inputs, CPU. Both sides see the same batches in the same
order. The bare loop is the minimum a hand-written loop does per batch: forward, cross-entropy,
backward (and, for the second ratio, the SGD step). The trainer epoch adds everything the trainer does:
index sampling, batched on-device pad-crop/flip/normalise, the loss module, the finite-loss guard, the
optimizer step and the running statistics. Validation and checkpointing run once per epoch outside
this training pass and are not timed here.

Run: ``python benchmarks/trainer_overhead.py [--batches 40] [--repeats 3]``; writes
``benchmarks/results/trainer_overhead.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import tailwise
from tailwise.data.arrays import ArrayDataset
from tailwise.data.prepare import DataBundle
from tailwise.train.config import apply_overrides, config_from_dict, load_recipe
from tailwise.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _suite import cpu_name

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def synthetic_bundle(n_train: int, seed: int = 0) -> DataBundle:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_train, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n_train,), generator=g)
    small = ArrayDataset(x[:256], y[:256], 10)
    return DataBundle(train=ArrayDataset(x, y, 10), val=small, test=small, num_classes=10, class_names=None,
                      mean=CIFAR_MEAN, std=CIFAR_STD, augment=True, input_shape=(3, 32, 32), info={})



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="cpu: process CPU time (robust to other jobs on the machine; use with --threads 1)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "trainer_overhead.md"))
    args = parser.parse_args()
    batch = 128
    if args.threads:
        torch.set_num_threads(args.threads)
    data = synthetic_bundle(args.batches * batch)
    values = apply_overrides(load_recipe("ce"), [
        "model=resnet32", "data.long_tail=null", "train.epochs=1", f"train.batch_size={batch}",
        "train.progress=false", "train.plots=false", "schedule.warmup_epochs=0",
    ])
    cfg = config_from_dict(values)
    trainer = Trainer(cfg, run_dir=Path("/tmp/tailwise-bench-overhead"), data=data, log=None)
    trainer._set_epoch(0)
    model, opt = trainer.model, trainer.optimizer

    # the exact batches the trainer will see in epoch 0, pre-augmented once for the bare loop
    idx = trainer._sampler_indices()
    gen = torch.Generator().manual_seed(0)
    bare_batches = [(trainer.augment(trainer.train_x[idx[s:s + batch]], generator=gen, train=True), trainer.train_y[idx[s:s + batch]])
                    for s in range(0, idx.numel(), batch)]

    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    def bare(step: bool) -> float:
        model.train()
        t = clock()
        for x, y in bare_batches:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if step:
                opt.step()
        return clock() - t

    def trainer_epoch() -> float:
        t = clock()
        trainer.train_epoch(0)
        return clock() - t

    bare(True)  # warm-up
    trainer_epoch()
    rows = []
    for r in range(args.repeats):  # interleaved so drift affects all three alike
        rows.append((bare(False), bare(True), trainer_epoch()))
        print(f"repeat {r}: bare fwd+bwd {rows[-1][0]:.2f}s  bare +step {rows[-1][1]:.2f}s  trainer {rows[-1][2]:.2f}s", flush=True)
    t_fb = statistics.median(r[0] for r in rows)
    t_step = statistics.median(r[1] for r in rows)
    t_tr = statistics.median(r[2] for r in rows)
    ratios_fb = [r[2] / r[0] for r in rows]
    ratios_step = [r[2] / r[1] for r in rows]
    text = f"""# Trainer overhead (CPU)

ResNet-32 (linear head), batch 128, 3x32x32 uint8 inputs, {args.batches} batches per epoch, {args.repeats}
interleaved repeats (median, with min–max of the per-repeat ratios), timed by the {args.clock} clock
({"process CPU time, which other jobs on the machine do not inflate" if args.clock == "cpu" else "wall time"}). Machine: {cpu_name()},
{torch.get_num_threads()} threads; torch {torch.__version__}; tailwise {tailwise.__version__}; seed 0.

| measurement | seconds per epoch (median) | ratio trainer / this |
|---|---:|---:|
| bare forward + backward | {t_fb:.2f} | {t_tr / t_fb:.3f} (min {min(ratios_fb):.3f}, max {max(ratios_fb):.3f}) |
| bare forward + backward + SGD step | {t_step:.2f} | {t_tr / t_step:.3f} (min {min(ratios_step):.3f}, max {max(ratios_step):.3f}) |
| trainer epoch (sampling, on-device augmentation, loss module, NaN guard, step, statistics) | {t_tr:.2f} | 1.000 |

Target: trainer / bare forward+backward at most 1.10.
Reproduce: `python benchmarks/trainer_overhead.py --batches {args.batches} --repeats {args.repeats} --threads {torch.get_num_threads()} --clock {args.clock}`.
"""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
