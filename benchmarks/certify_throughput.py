"""Noisy-sample throughput of randomized-smoothing certification against the bare model's forward pass.

``Smooth.sample_counts`` (and ``Smooth.certify`` = ``n0`` + ``n`` samples plus the Clopper-Pearson bound)
draws ``batch`` noisy copies of one input, runs the base model on them and counts the argmax votes. The
bare reference runs the same model, in eval mode under ``torch.no_grad()``, on a fixed batch of the
same size (no noise, no counting). The ratio ``throughput(smooth) / throughput(bare)`` is the fraction
of the model's speed that certification keeps (target: at least 0.9).

Models: the small CNN (default sizes, 1x28x28 MNIST-shaped inputs) and ResNet-32 (3x32x32 CIFAR-shaped).
Timing: process CPU time (``time.process_time``) with one thread by default, which other jobs on the
machine do not inflate, plus wall time; the measurements are interleaved (bare, sample_counts, certify)
in every repeat, and the table gives the median over repeats with the min-max of the per-repeat ratios.

Run: ``python benchmarks/certify_throughput.py [--repeats 5] [--threads 1] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _suite import environment  # noqa: E402

CASES = [
    # label, model name, input shape, batch, batches per measurement
    ("small CNN, MNIST-shaped 1x28x28", "small_cnn", (1, 28, 28), 1000, 4),
    ("ResNet-32, CIFAR-shaped 3x32x32", "resnet32", (3, 32, 32), 200, 3),
]


def _clocks() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def measure(model: torch.nn.Module, shape: tuple[int, ...], batch: int, batches: int, repeats: int,
            seed: int) -> dict[str, Any]:
    from tailwise.certify import Smooth

    model.eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen)
    fixed = torch.rand((batch, *shape), generator=gen)
    smooth = Smooth(model, 10, 0.25)
    num = batch * batches
    n0 = batch  # certify: one batch of selection samples, then `batches` batches of estimation samples
    with torch.no_grad():  # warm-up (also imports SciPy, which certify loads lazily)
        model(fixed)
        smooth.certify(x, batch, batch, 0.001, batch, generator=gen)
    rows: dict[str, list[tuple[float, float]]] = {"bare": [], "sample_counts": [], "certify": []}
    for _ in range(repeats):
        c0, w0 = _clocks()
        with torch.no_grad():
            for _ in range(batches):
                model(fixed).argmax(1)
        c1, w1 = _clocks()
        rows["bare"].append((num / (c1 - c0), num / (w1 - w0)))
        c0, w0 = _clocks()
        counts = smooth.sample_counts(x, num, batch, gen)
        c1, w1 = _clocks()
        assert int(counts.sum()) == num
        rows["sample_counts"].append((num / (c1 - c0), num / (w1 - w0)))
        c0, w0 = _clocks()
        smooth.certify(x, n0, num, 0.001, batch, generator=gen)
        c1, w1 = _clocks()
        rows["certify"].append(((n0 + num) / (c1 - c0), (n0 + num) / (w1 - w0)))
    out: dict[str, Any] = {}
    for key, vals in rows.items():
        cpu = [v[0] for v in vals]
        wall = [v[1] for v in vals]
        ratios_cpu = [a / b[0] for a, b in zip(cpu, rows["bare"])]
        ratios_wall = [a / b[1] for a, b in zip(wall, rows["bare"])]
        out[key] = {"cpu": statistics.median(cpu), "wall": statistics.median(wall),
                    "ratio_cpu": statistics.median(ratios_cpu), "ratio_cpu_min": min(ratios_cpu),
                    "ratio_cpu_max": max(ratios_cpu), "ratio_wall": statistics.median(ratios_wall),
                    "ratio_wall_min": min(ratios_wall), "ratio_wall_max": max(ratios_wall)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "certify_throughput.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from tailwise.registry import MODELS
    from tailwise.train.trainer import load_components

    load_components()
    env = environment(args.threads)
    lines = [
        "# Certification throughput (CPU)",
        "",
        "Noisy samples per second of `Smooth.sample_counts` and `Smooth.certify` (n0 = one batch, n = the "
        "samples of the bare measurement, alpha 0.001) against the bare model's forward pass (eval mode, "
        "`torch.no_grad()`, argmax) at the same batch size; random weights, one input image of the given "
        f"shape, sigma 0.25. Median of {args.repeats} interleaved repeats, ratio min-max over the repeats. "
        "CPU = process CPU time (robust to other jobs on the machine), wall = elapsed time.",
        "",
        f"Machine: {env['machine']}; load average at start {env['load_average']}; {args.threads} thread(s); "
        f"python {env['python']}; torch {env['torch']}; tailwise {env['tailwise']}; seed {args.seed}; "
        f"date {env['date']}.",
        "",
        "| model | batch | samples per measurement | measurement | samples/s (CPU) | samples/s (wall) | "
        "ratio to bare, CPU (min-max) | ratio to bare, wall (min-max) |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    worst = 1.0
    for label, name, shape, batch, batches in CASES:
        model = MODELS.build(name, {}, num_classes=10, in_channels=shape[0])
        res = measure(model, shape, batch, batches, args.repeats, args.seed)
        for key in ("bare", "sample_counts", "certify"):
            r = res[key]
            ratio_cpu = "1" if key == "bare" else f"{r['ratio_cpu']:.3f} ({r['ratio_cpu_min']:.3f}-{r['ratio_cpu_max']:.3f})"
            ratio_wall = "1" if key == "bare" else f"{r['ratio_wall']:.3f} ({r['ratio_wall_min']:.3f}-{r['ratio_wall_max']:.3f})"
            if key != "bare":
                worst = min(worst, r["ratio_cpu"])
            n = batch * batches + (batch if key == "certify" else 0)
            lines.append(f"| {label} | {batch} | {n} | {key} | {r['cpu']:.0f} | {r['wall']:.0f} | {ratio_cpu} | {ratio_wall} |")
        print(lines[-3:], flush=True)
    verdict = "meets" if worst >= 0.9 else "misses"
    lines += [
        "",
        f"Target: certification throughput at least 0.9x the bare forward throughput (CPU-time ratio). Lowest median "
        f"ratio: {worst:.3f}, which {verdict} the target.",
        f"Reproduce: `{env['command']}`.",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
