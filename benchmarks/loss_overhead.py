"""Loss overhead: forward+backward of each tailwise loss against ``F.cross_entropy`` on the same batch.

Shapes (N, C) = (1024, 1000) and (256, 10), float32, CPU. Every loss in ``tailwise.registry.LOSSES`` that
is called as ``loss(logits, target)`` is built with ``LOSSES.build(name, params, class_counts=...,
num_classes=C)`` from long-tailed class counts (exponential profile, imbalance ratio rho = 100, head
count 5000), and the module-free functional forms (``tailwise.functional.ldam_loss``, ...) are timed
beside them. Losses that need the model (``needs_model``) or worst-case logits (``needs_worst``) are not
called as ``loss(logits, target)`` and are listed as skipped.

Method. All variants see the same logits (``requires_grad``; by default uniform in [-1, 1], the cosine
range of the cosine head that LDAM is defined on, ``--logits randn`` for standard normal) and the same
labels (drawn from the long-tailed class priors). One call is ``loss = fn(logits, target); loss.backward()``, timed on its
own with ``time.perf_counter``. A round is ``--iters`` sweeps; each sweep calls every variant once in
round-robin order (rotated by one position per sweep), so load drift from other processes hits all
variants alike. ``F.cross_entropy`` runs twice per sweep: the first copy is the baseline, the second a
control whose ratio shows the noise floor. Each tailwise variant runs once with value checks on (the
default) and once with ``tailwise.set_validation(False)`` in the same sweep. Per round, the time of a
variant is the median of its calls and its ratio is that median over the baseline's median of the same
round; the table gives the median over ``--rounds`` rounds, with the interquartile range of the per-round
ratios, and, as a cross-check on a loaded machine, the median over rounds of the ratio of the fastest calls
(per-round minima), which estimates the uncontended cost. The Python garbage collector is off inside a
round.

Targets (DESIGN.md, performance targets): at most 1.3x for the margin/prior losses (LDAM, VS, LA,
Bayias), at most 2x for the rest. A verdict compares the median ratio with the target.

Run: ``python benchmarks/loss_overhead.py [--rounds 7] [--threads N]``; writes
``benchmarks/results/loss_overhead.md``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

import tailwise
import tailwise.functional as TF
from tailwise._validation import check_logits_target
from tailwise.data.long_tail import long_tail_counts
from tailwise.registry import LOSSES
from tailwise.train.trainer import load_components

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _suite import cpu_name

SHAPES = ((1024, 1000), (256, 10))
RHO = 100
N_MAX = 5000
MARGIN_PRIOR_TARGET = 1.3
OTHER_TARGET = 2.0
# a baseline whose interleaved median exceeds its fastest or consecutive-call time by this factor was
# slowed by the variants run before it (at N=1024 mostly page faults of freshly allocated buffers)
BASELINE_SLOWED = 1.3
# registry names and functional forms held to the margin/prior target
MARGIN_PRIOR = {"ldam", "vs", "la", "bayias", "ldam_loss", "vs_loss", "logit_adjusted_loss", "bayias_loss"}
# per-loss parameters where the registry default is not the long-tail setting
PARAMS: dict[str, dict] = {
    "alpha": {"alpha": 0.8},  # the paper's class-imbalance regime is alpha < 1 (alpha = 1 is plain CE)
}
# the name shown for a factory registered under several names
PRIMARY_NAMES = {"alpha", "mbls", "logit_clip"}
EXTRA_MODULES: dict[str, tuple[str, dict]] = {
    "class_balanced (loss_type=focal)": ("class_balanced", {"loss_type": "focal"}),
    # with the default margin 10 no CALS constraint is active on logits in [-1, 1]; margin 1 activates
    # about half of them, so this row times the whole computation (the maxima located, see the notes)
    "cals (margin=1, penalty active)": ("cals", {"margin": 1.0}),
}

LOGITS_TEXT = {
    "cosine": "uniform in [-1, 1] (`rand(N, C) * 2 - 1`, the cosine range LDAM's scale 30 is meant for)",
    "randn": "`randn(N, C)`",
}

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Variant:
    name: str  # row label
    kind: str  # "module" | "functional" | "baseline"
    family: str  # registry name or functional name (target lookup)
    fn: LossFn
    validate: bool | None  # value checks on/off; None for the torch baseline

    @property
    def target(self) -> float | None:
        if self.kind in ("baseline", "reference"):
            return None
        return MARGIN_PRIOR_TARGET if self.family in MARGIN_PRIOR else OTHER_TARGET



def registry_losses() -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Registered names taking ``(logits, target)`` (one per factory), their aliases, and the skipped ones."""
    load_components()
    by_factory: dict[int, list[str]] = {}
    for name in LOSSES.names():
        by_factory.setdefault(id(LOSSES.get(name)), []).append(name)
    names, aliases, skipped = [], {}, {}
    for group in by_factory.values():
        primary = next((n for n in group if n in PRIMARY_NAMES), min(group, key=len))
        factory = LOSSES.get(primary)
        if getattr(factory, "needs_model", False):
            skipped[primary] = "`needs_model`: called with the model and the inputs"
            continue
        if getattr(factory, "needs_worst", False):
            skipped[primary] = "`needs_worst`: called with the clean and the worst-case outputs"
            continue
        names.append(primary)
        aliases[primary] = ", ".join(sorted(n for n in group if n != primary))
    return sorted(names), aliases, skipped


def build_variants(c: int, counts: Tensor, modules: list[str]) -> list[Variant]:
    out: list[Variant] = []
    for name in modules:
        loss = LOSSES.build(name, PARAMS.get(name, {}), class_counts=counts, num_classes=c)
        label = name + "".join(f" ({k}={v})" for k, v in PARAMS.get(name, {}).items())
        out.append(Variant(label, "module", name, loss, True))
    for label, (name, params) in EXTRA_MODULES.items():
        out.append(Variant(label, "module", name, LOSSES.build(name, params, class_counts=counts, num_classes=c), True))

    margins = TF.ldam_margins(counts)
    cals = LOSSES.build("cals", {}, num_classes=c)
    lambd, rho = cals.lambd.float(), cals.rho.float()
    cdb_w = torch.ones(c, dtype=torch.float64)
    functional: list[tuple[str, str, LossFn]] = [
        ("cross_entropy", "cross_entropy", lambda z, y: TF.cross_entropy(z, y)),
        ("ldam_loss(class_counts=...)", "ldam_loss", lambda z, y: TF.ldam_loss(z, y, counts)),
        ("ldam_loss(margins=...)", "ldam_loss", lambda z, y: TF.ldam_loss(z, y, margins=margins)),
        ("vs_loss", "vs_loss", lambda z, y: TF.vs_loss(z, y, counts)),
        ("logit_adjusted_loss", "logit_adjusted_loss", lambda z, y: TF.logit_adjusted_loss(z, y, counts)),
        ("cdt_loss", "cdt_loss", lambda z, y: TF.cdt_loss(z, y, counts)),
        ("bayias_loss", "bayias_loss", lambda z, y: TF.bayias_loss(z, y, counts)),
        ("alpha_loss (alpha=0.8)", "alpha_loss", lambda z, y: TF.alpha_loss(z, y, 0.8)),
        ("cals_loss", "cals_loss", lambda z, y: TF.cals_loss(z, y, lambd, rho)),
        ("cdb_loss", "cdb_loss", lambda z, y: TF.cdb_loss(z, y, cdb_w)),
        ("class_balanced_loss", "class_balanced_loss", lambda z, y: TF.class_balanced_loss(z, y, counts)),
        ("class_balanced_loss (loss_type=focal)", "class_balanced_loss",
         lambda z, y: TF.class_balanced_loss(z, y, counts, loss_type="focal")),
        ("focal_loss", "focal_loss", lambda z, y: TF.focal_loss(z, y)),
        ("label_smoothing_loss", "label_smoothing_loss", lambda z, y: TF.label_smoothing_loss(z, y)),
        ("mbls_loss", "mbls_loss", lambda z, y: TF.mbls_loss(z, y)),
        ("weighted_cross_entropy", "weighted_cross_entropy", lambda z, y: TF.weighted_cross_entropy(z, y, counts)),
        ("logit_clip_loss", "logit_clip_loss", lambda z, y: TF.logit_clip_loss(z, y, 1.0)),
        ("clip_logits + cross_entropy", "clip_logits", lambda z, y: TF.cross_entropy(TF.clip_logits(z, 1.0), y)),
    ]
    for label, family, fn in functional:
        out.append(Variant(label, "functional", family, fn, True))
    # every tailwise variant twice: value checks on, then off
    out = [v for base in out for v in (base, Variant(base.name, base.kind, base.family, base.fn, False))]
    baseline = Variant("F.cross_entropy", "baseline", "F.cross_entropy", lambda z, y: F.cross_entropy(z, y), None)
    control = Variant("F.cross_entropy (control copy)", "baseline", "F.cross_entropy", baseline.fn, None)
    # floors of what any checked, adjusted loss costs: one extra elementwise op, and the value checks alone
    offset = torch.log(counts / counts.sum()).float()

    def checks_then_ce(z: Tensor, y: Tensor) -> Tensor:
        check_logits_target(z, y)
        return F.cross_entropy(z, y)

    floors = [
        Variant("F.cross_entropy(z + b) (floor: one extra op)", "reference", "F.cross_entropy",
                lambda z, y: F.cross_entropy(z + offset, y), None),
        Variant("value checks + F.cross_entropy (floor: checks)", "reference", "F.cross_entropy", checks_then_ce, None),
    ]
    return [baseline, *out, *floors, control]


def call(v: Variant, logits: Tensor, target: Tensor) -> float:
    """Time one forward+backward of ``v`` (validation flag set outside the timed region)."""
    if v.validate is not None:
        tailwise.set_validation(v.validate)
    logits.grad = None
    t = time.perf_counter()
    v.fn(logits, target).backward()
    return time.perf_counter() - t


def block(v: Variant, logits: Tensor, target: Tensor, iters: int) -> float:
    """Seconds per call over ``iters`` consecutive forward+backward calls of ``v`` (warm caches)."""
    if v.validate is not None:
        tailwise.set_validation(v.validate)
    fn = v.fn
    t = time.perf_counter()
    for _ in range(iters):
        logits.grad = None
        fn(logits, target).backward()
    return (time.perf_counter() - t) / iters


def measure(variants: list[Variant], logits: Tensor, target: Tensor, rounds: int, iters: int, warmup: int,
            seed: int = 0) -> tuple[list[list[float]], list[list[float]], list[list[float]]]:
    """Per-round median and minimum seconds per interleaved call, and per-call seconds of consecutive blocks.

    Each list is ``[round][variant]``.
    """
    for _ in range(warmup):
        for v in variants:
            call(v, logits, target)
    per_round, per_round_min, per_round_block = [], [], []
    k = len(variants)
    rng = random.Random(seed)
    for r in range(rounds):
        samples: list[list[float]] = [[] for _ in variants]
        blocks = [0.0] * k
        gc.collect()
        gc.disable()
        try:
            for _ in range(iters):
                # a fresh random order every sweep: each variant (the baseline included) follows a random
                # other one, so no variant is systematically timed right after itself or a similar twin
                order = list(range(k))
                rng.shuffle(order)
                for i in order:
                    samples[i].append(call(variants[i], logits, target))
            for j in range(k):
                i = (j + r) % k
                blocks[i] = block(variants[i], logits, target, iters)
        finally:
            gc.enable()
            tailwise.set_validation(True)
        per_round.append([statistics.median(s) for s in samples])
        per_round_min.append([min(s) for s in samples])
        per_round_block.append(blocks)
        print(f"  round {r + 1}/{rounds}: F.cross_entropy median {per_round[-1][0] * 1e6:.1f} us, "
              f"min {per_round_min[-1][0] * 1e6:.1f} us, block {blocks[0] * 1e6:.1f} us", flush=True)
    return per_round, per_round_min, per_round_block


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def verdict(ratio: float, target: float | None) -> str:
    if target is None:
        return ""
    return "PASS" if ratio <= target else f"**FAIL** ({ratio / target:.2f}x over)"


def table(variants: list[Variant], per_round: list[list[float]], per_round_min: list[list[float]],
          per_round_block: list[list[float]]) -> tuple[str, list[tuple[str, str]]]:
    """Markdown rows (one per loss, validation on/off side by side) and the misses."""
    ce_us = statistics.median(r[0] for r in per_round) * 1e6
    ce_min_us = statistics.median(r[0] for r in per_round_min) * 1e6
    ce_block_us = statistics.median(r[0] for r in per_round_block) * 1e6
    stats = {}
    for i, v in enumerate(variants):
        ratios = [r[i] / r[0] for r in per_round]
        q1, med, q3 = quartiles(ratios)
        min_ratio = statistics.median(r[i] / r[0] for r in per_round_min)
        block_ratio = statistics.median(r[i] / r[0] for r in per_round_block)
        stats[(v.name, v.validate)] = (statistics.median(r[i] for r in per_round) * 1e6, med, q1, q3, min_ratio,
                                       block_ratio)
    lines = [
        "| loss | form | target | val. on: us/call | ratio (IQR) | ratio of minima | consecutive calls ratio "
        "| verdict | val. off: us/call | ratio (IQR) | ratio of minima | consecutive calls ratio | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    misses = []
    slowed = ce_us > BASELINE_SLOWED * min(ce_min_us, ce_block_us)
    for v in variants:
        if v.kind in ("baseline", "reference"):
            t, med, q1, q3, mr, br = stats[(v.name, None)]
            cell = f"{t:.1f} | {med:.2f} ({q1:.2f}–{q3:.2f}) | {mr:.2f} | {br:.2f}"
            form = "torch" if v.kind == "baseline" else "reference"
            lines.append(f"| {v.name} | {form} | – | {cell} | {v.kind} | {cell} | {v.kind} |")
            continue
        if v.validate is False:
            continue
        on, off = stats[(v.name, True)], stats[(v.name, False)]
        cells = []
        for label, (t, med, q1, q3, mr, br) in (("on", on), ("off", off)):
            vd = verdict(mr if slowed else med, v.target)
            if vd != "PASS":
                judged = f"ratio of minima {mr:.2f}x (median {med:.2f}x)" if slowed else f"{med:.2f}x"
                misses.append((f"`{v.name}` ({v.kind}, target {v.target:g}x)",
                               f"val. {label} {judged} (consecutive calls {br:.2f}x)"))
            cells.append(f"{t:.1f} | {med:.2f} ({q1:.2f}–{q3:.2f}) | {mr:.2f} | {br:.2f} | {vd}")
        lines.append(f"| {v.name} | {v.kind} | {v.target:g}x | {cells[0]} | {cells[1]} |")
    head = (f"`F.cross_entropy` baseline: {ce_us:.1f} us per forward+backward (median interleaved call; fastest "
            f"call {ce_min_us:.1f} us; {ce_block_us:.1f} us per call in consecutive blocks).\n\n")
    if slowed:
        head += (f"**The interleaved baseline was slowed in this run** (median call {ce_us / ce_min_us:.2f}x its "
                 f"fastest call and {ce_us / ce_block_us:.2f}x its consecutive-call time, by the variants run before "
                 "it, or by the allocator in consecutive calls too): its interleaved ratios flatter every loss, "
                 "so at this shape the verdicts use the ratio of minima (the fastest calls, least affected by the "
                 "allocator's state).\n\n")
    return head + "\n".join(lines), misses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters-large", type=int, default=40, help="sweeps per round at N=1024, C=1000")
    parser.add_argument("--iters-small", type=int, default=150, help="sweeps per round at N=256, C=10")
    parser.add_argument("--warmup", type=int, default=5, help="untimed sweeps before the rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logits", choices=("cosine", "randn"), default="cosine",
                        help="uniform in [-1, 1] (cosine-head range, default) or standard normal")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "loss_overhead.md"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    modules, aliases, skipped = registry_losses()

    sections: list[str] = []
    all_misses: dict[str, list[str]] = {}
    for n, c in SHAPES:
        print(f"N={n}, C={c}", flush=True)
        counts = torch.tensor(long_tail_counts(N_MAX, c, RHO), dtype=torch.float64)
        g = torch.Generator().manual_seed(args.seed)
        if args.logits == "cosine":
            logits = (torch.rand(n, c, generator=g) * 2 - 1).requires_grad_()
        else:
            logits = torch.randn(n, c, generator=g).requires_grad_()
        target = torch.multinomial(counts / counts.sum(), n, replacement=True, generator=g)
        variants = build_variants(c, counts, modules)
        iters = args.iters_large if c >= 100 else args.iters_small
        per_round, per_round_min, per_round_block = measure(variants, logits, target, args.rounds, iters, args.warmup,
                                                            args.seed)
        text, misses = table(variants, per_round, per_round_min, per_round_block)
        for key, text_miss in misses:
            all_misses.setdefault(key, []).append(f"N={n}, C={c} {text_miss}")
        sections.append(f"## N={n}, C={c} ({iters} sweeps per round)\n\n"
                        f"Class counts: exponential profile, head {N_MAX}, rho {RHO} "
                        f"({int(counts[0])} … {int(counts[-1])}).\n\n{text}\n")

    alias_lines = [f"`{k}` (alias {a})" for k, a in aliases.items() if a]
    threads = args.threads or torch.get_num_threads()
    cmd = f"python benchmarks/loss_overhead.py --rounds {args.rounds} --threads {threads}"
    if (args.iters_large, args.iters_small, args.warmup, args.seed, args.logits) != (40, 150, 5, 0, "cosine"):
        cmd += (f" --iters-large {args.iters_large} --iters-small {args.iters_small} --warmup {args.warmup}"
                f" --seed {args.seed} --logits {args.logits}")
    misses_text = "\n".join(f"- {k}: {'; '.join(v)}" for k, v in all_misses.items()) or "- none"
    text = f"""# Loss overhead (CPU, float32)

Forward+backward of each loss over `F.cross_entropy` on the same logits and labels. Per call:
`loss = fn(logits, target); loss.backward()` with `reduction="mean"`. Each round interleaves all
variants call by call, in a fresh random order every sweep (so every variant, the baseline included,
follows a random other variant); the time is the median over {args.rounds} rounds of
each round's median call, the ratio the median of the per-round ratios to `F.cross_entropy` in the same
round, with their interquartile range. "val. on" is the default (value checks: finite logits, labels in
range); "val. off" is `tailwise.set_validation(False)`. `F.cross_entropy (control copy)` is the baseline
timed a second time in every sweep: its distance from 1.00 is the noise floor. "Ratio of minima" is the
median over rounds of the ratio of the fastest calls, a cross-check that is less sensitive to load.
"Consecutive calls ratio" times, after each round's interleaved sweeps, a block of the same number of
consecutive calls of each variant (warm instruction and data caches, as `timeit` measures), median over
rounds of the per-round ratio. The verdict uses the interleaved median, the stricter of the two: with
every variant run between calls of the others, the Python-level code of a loss runs with cold caches,
as it does in a training step between the model's forward and backward, while `F.cross_entropy` is a
single C++ call; the gap between the two columns is that effect, largest at N=256, C=10 where one call
is tens of microseconds. At N=1024, C=1000 the baseline itself can be slowed when interleaved (its
freshly allocated 4 MB buffers page-fault after other variants let the allocator return memory to the
system): when its interleaved median exceeds its fastest or consecutive-call time by more than
{BASELINE_SLOWED}x, the table says so and the verdicts at that shape use the ratio of minima. Two reference rows bound what any loss built on cross-entropy can reach:
`F.cross_entropy(z + b)` (one extra elementwise op, the logit adjustment of LA without any checks) and
`value checks + F.cross_entropy` (tailwise's label and finite-logit checks in front of plain
cross-entropy); at N=256, C=10 a target below these floors cannot be met by a checked loss.

Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, torch threads: {threads} (other processes were
running on the machine; load average {os.getloadavg()[0]:.1f} at the end of the run). Python {platform.python_version()}; torch {torch.__version__}; tailwise
{tailwise.__version__}. Seed {args.seed}; logits {LOGITS_TEXT[args.logits]}; labels drawn from the class priors.

Targets: at most {MARGIN_PRIOR_TARGET}x for the margin/prior losses (LDAM, VS, LA, Bayias, module and
functional forms), at most {OTHER_TARGET:g}x for the rest (`cdt`, VS with tau = 0, included); a verdict
compares the median ratio with the target (the ratio of minima under a slowed baseline).
Modules are built with `LOSSES.build(name, params, class_counts=counts, num_classes=C)` and registry
defaults, except `alpha` with alpha = 0.8 (the class-imbalance regime; alpha = 1 is plain CE).
Registered aliases timed once: {", ".join(alias_lines) or "none"}.
Not timed (not called as `loss(logits, target)`): {", ".join(f"`{k}` ({r})" for k, r in sorted(skipped.items()))}.
`absgd` (default base `ce`, lam 5, from epoch 0) has no module-free form and updates its state on every
call; `logit_clip`'s module-free form is `logit_clip_loss` (one kernel); `clip_logits` followed by
`cross_entropy`, the composition it equals, is timed as well.

Notes. Value checks on a CPU tensor need no device synchronisation: labels cost one `aminmax`, finite
logits one sum (a finite sum proves every element finite; only a non-finite sum runs the element-wise
check); on the GPU each check is a synchronisation. At C=10 `F.cross_entropy` runs PyTorch's CPU
log-softmax on rows shorter than a vector register, a slow scalar path; tailwise's kernels for float32
CPU logits with fewer than 16 classes compute it in the transposed (C, N) layout, vectorised over the
samples, and compose native operations on small inputs (see `tailwise.functional._fused`). The
functional forms are called with the same class-count, margin and multiplier tensors in every call, so
after the first call they reuse their prepared constants (`tailwise.functional._prepared`), as a
training loop that passes the same tensors does; called with a list or a new tensor each time they
derive the constants on every call. With
`--logits randn`, LDAM multiplies standard-normal logits by its scale 30, most softmax terms underflow to
float32 subnormals and x86 handles those slowly (an order of magnitude slower in a spot check here; the
same happens to `F.cross_entropy(30 * logits)`, and `torch.set_flush_denormal(True)` removes it): an
input-range effect, not overhead of the loss, hence cosine-range logits by default.
CALS with its default margin 10 and the official initial multipliers (lambda = 1e-6, rho = 1) has no
active constraint on logits in [-1, 1] (every distance to the row maximum is below 2): the penalty's
derivative is zero, so is `amax`'s share of the gradient, and on the CPU CALS then skips locating the
maxima (an exact shortcut, also taken in training while no distance exceeds the margin); MbLS with
its default margin 10 likewise has no distance beyond the margin here and skips `Tensor.max`'s index.
`cals (margin=1, penalty active)` activates about half of the constraints and times the whole
computation, maxima located (one product of their mask with column codes, see
`tailwise.functional._maxima`), as in later epochs of training. The fused LDAM/VS/LA/CDT/Bayias,
LogitClip and CALS kernels keep the softmax itself on the CPU and take the loss from the labels'
log-probabilities (rows whose probability underflows are recomputed exactly); CALS, MbLS and label
smoothing (no class weights, mean or sum) form the gradient in the forward from the exponentials of
the shifted logits; LogitClip, CALS and MbLS keep their intermediate `(N, C)` buffer between calls
(`tailwise.functional._workspace`). Focal loss runs one autograd function with its analytic gradient.

{chr(10).join(sections)}
## Misses (the ratio the verdict uses, over the target)

{misses_text}

Reproduce: `{cmd}`.
"""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
