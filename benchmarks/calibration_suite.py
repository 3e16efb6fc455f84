"""Calibration suite: CE vs label smoothing vs MbLS vs CALS on balanced and long-tailed Fashion-MNIST.

Liu et al., CVPR 2022 (MbLS) and CVPR 2023 (CALS); spec ``robust.md`` section 5. One protocol for the
four losses, the ``cals`` recipe's (SGD 0.1, momentum 0.9, weight decay 5e-4, batch 128, no warm-up,
x0.1 at 40% and 60% of the epochs: the recipe's 40/60 of 100, scaled), each method contributing its
recipe's ``loss`` section: CE; ``label-smoothing`` (epsilon 0.05); ``mbls`` (margin 10, alpha 0.1);
``cals`` (margin 10, PHR penalty, multipliers from the validation split after every epoch).

Datasets: Fashion-MNIST balanced (54,000 train / 6,000 val / 10,000 test) and its long-tailed variant
(``data.long_tail={profile: exp, rho: 100}``, LDAM convention: ~13,400 train, 10% of it as an equally
long-tailed validation split, the balanced 10,000-image test set).

Metrics on the test set, with the best-on-validation weights (the CALS protocol selects on validation
accuracy): accuracy (and balanced accuracy), top-label ECE with 15 equal-width bins, adaptive
(equal-mass) ECE with 15 bins, NLL, and ECE / NLL after temperature scaling with ``T`` fitted on the
validation split's logits (:func:`tailwise.metrics.fit_temperature`).

Run from the repository root::

    python benchmarks/calibration_suite.py [--seeds 0 1 2] [--epochs 20] [--model mlp] [--max-minutes M] [--render-only]

Writes ``benchmarks/results/calibration.md`` / ``.json`` and ``calibration.png`` (reliability
diagrams of seed 0); per-run JSON in ``benchmarks/results/runs/calibration/``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from noise_suite import (
    RESULTS,
    Deadline,
    RunCache,
    _json_default,
    best_model,
    build_config,
    commands_markdown,
    common_args,
    env_markdown,
    environment,
    fmt,
    logger,
    loss_section_overrides,
    md_table,
    mean_std,
)

SUITE = "calibration"

METHODS = {
    "ce": ("CE", None),
    "ls": ("label smoothing (0.05)", "label-smoothing"),
    "mbls": ("MbLS (m 10, α 0.1)", "mbls"),
    "cals": ("CALS (m 10)", "cals"),
}

DATASETS = {
    "balanced": ("Fashion-MNIST (balanced)", ["data.long_tail=null"], None),
    "lt100": ("Fashion-MNIST-LT (exp, rho = 100)", ["data.long_tail={profile: exp, rho: 100, convention: ldam, seed: 0}"],
              {"profile": "exp", "rho": 100, "convention": "ldam", "seed": 0}),
}

METRICS = ("accuracy", "balanced_accuracy", "ece", "adaece", "nll", "temperature", "ece_ts", "adaece_ts", "nll_ts")


def loss_overrides(method: str) -> list[str]:
    recipe = METHODS[method][1]
    return ["loss=ce"] if recipe is None else loss_section_overrides(recipe)


def calibration_metrics(logits: torch.Tensor, target: torch.Tensor, logits_val: torch.Tensor,
                        target_val: torch.Tensor) -> dict[str, Any]:
    from tailwise.metrics import (
        adaptive_calibration_error,
        balanced_accuracy,
        expected_calibration_error,
        fit_temperature,
        negative_log_likelihood,
    )

    z, y = logits.double().cpu(), target.cpu()
    t = fit_temperature(logits_val.cpu(), target_val.cpu())
    out = {
        "accuracy": float((z.argmax(1) == y).double().mean()),
        "balanced_accuracy": float(balanced_accuracy(z.argmax(1), y, num_classes=z.shape[1])),
        "per_class_accuracy": [float((z.argmax(1)[y == c] == c).double().mean()) for c in range(z.shape[1])],
        "ece": float(expected_calibration_error(z, y, n_bins=15, input="logits")),
        "adaece": float(adaptive_calibration_error(z, y, n_bins=15, input="logits")),
        "nll": float(negative_log_likelihood(z, y, input="logits")),
        "temperature": t,
        "ece_ts": float(expected_calibration_error(z / t, y, n_bins=15, input="logits")),
        "adaece_ts": float(adaptive_calibration_error(z / t, y, n_bins=15, input="logits")),
        "nll_ts": float(negative_log_likelihood(z / t, y, input="logits")),
        "mean_confidence": float(torch.softmax(z, 1).max(1).values.mean()),
    }
    return out


def reliability(logits: torch.Tensor, target: torch.Tensor, n_bins: int = 15) -> dict[str, list[float]]:
    """Per-bin (15 equal-width) counts, mean confidence and accuracy, for the plot."""
    from tailwise.metrics import calibration_bin_index

    p = torch.softmax(logits.double().cpu(), 1)
    conf, pred = p.max(1)
    correct = (pred == target.cpu()).double()
    idx = calibration_bin_index(conf, n_bins)
    count = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, torch.ones_like(conf))
    cs = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, conf)
    acc = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, correct)
    return {"count": count.tolist(), "confidence": (cs / count.clamp_min(1)).tolist(), "accuracy": (acc / count.clamp_min(1)).tolist()}


def post(trainer: Any) -> dict[str, Any]:
    model = best_model(trainer)
    _, test_logits = trainer.evaluate("test", model)
    _, val_logits = trainer.evaluate("val", model)
    yt, yv = trainer.data.test.y, trainer.data.val.y
    out = {"best": calibration_metrics(test_logits, yt, val_logits, yv),
           "reliability_best": reliability(test_logits, yt)}
    _, test_last = trainer.evaluate("test")
    _, val_last = trainer.evaluate("val")
    out["last"] = calibration_metrics(test_last, yt, val_last, yv)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_args(parser, epochs=20, seeds=[0, 1, 2])
    parser.add_argument("--data", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--model", default="mlp", help="mlp (784-256-256-10) or small_cnn")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cache, deadline, log = RunCache(SUITE), Deadline(args.max_minutes), logger(args.quiet)
    t0 = time.perf_counter()
    if not args.render_only:
        from tailwise.data import prepare_data

        for data_key in args.data:
            bundle = None
            for seed in args.seeds:
                for method in args.methods:
                    key = f"fmnist-{data_key}-{args.model}-{method}-e{args.epochs}-seed{seed}"
                    if cache.get(key) is not None:
                        continue
                    if deadline.expired():
                        print(f"[calibration] deadline reached; skipping {key}", flush=True)
                        continue
                    if bundle is None:
                        bundle = prepare_data("fashion-mnist", long_tail=DATASETS[data_key][2], val_fraction=0.1, seed=0)
                    cfg, rescaled = build_config("cals", ["data.name=fashion-mnist", *DATASETS[data_key][1], f"model={args.model}",
                                                *loss_overrides(method)], epochs=args.epochs, seed=seed, threads=args.threads)
                    print(f"[calibration] {key}", flush=True)
                    r = cache.run(key, cfg, bundle, post=post, log=log,
                                  meta={"suite": SUITE, "rescaled": rescaled, "data_key": data_key, "method": method, "seed": seed,
                                        "epochs": args.epochs, "model_name": args.model})
                    b = r["best"]
                    print(f"[calibration]   acc {b['accuracy']:.4f} ece {b['ece']:.4f} nll {b['nll']:.4f} "
                          f"ece_ts {b['ece_ts']:.4f} ({r['wall_seconds']:.0f}s)", flush=True)
    render(args, time.perf_counter() - t0)
    return 0


def render(args: argparse.Namespace, elapsed: float) -> None:
    runs = [r for r in RunCache(SUITE).all() if r.get("suite") == SUITE]
    env = environment(args.threads)
    lines = [
        "# Calibration suite: CE vs label smoothing vs MbLS vs CALS (Fashion-MNIST, balanced and long-tailed)",
        "",
        "Test-set metrics of the best-on-validation weights, mean ± sample std over training seeds. Accuracy, "
        "top-label ECE (15 equal-width bins), adaptive ECE (15 equal-mass bins) in %, NLL in nats; `T` = temperature "
        "fitted on the validation split's logits (`tailwise.metrics.fit_temperature`, same weights), `… after TS` = "
        "the same metric on logits / T. Lower is better for ECE / AdaECE / NLL. Validation and test labels are clean.",
        "",
        env_markdown(env),
        commands_markdown(runs),
        "- Generated by `benchmarks/calibration_suite.py`; per-run JSON in `benchmarks/results/runs/calibration/`.",
        "",
        "Protocol (one for the four losses, only the loss differs): the `cals` recipe's optimiser — SGD lr 0.1, momentum "
        "0.9, weight decay 5e-4, batch 128, no warm-up, lr x0.1 at 40% and 60% of the epochs (recipe: 40/60 of 100), "
        "selection on validation accuracy. Losses from the recipes: CE; `label-smoothing` (epsilon 0.05); `mbls` (margin 10, "
        "alpha 0.1); `cals` (margin 10, PHR, lambda from the validation split after each epoch, rho x1.2 every 10 "
        "epochs — i.e. at most once or twice in these short runs). Not reproduced: the CALS code's AMP and gradient "
        "clipping at 2.0.",
        "",
    ]
    payload: dict[str, Any] = {"environment": env, "tables": []}
    groups: dict[tuple[str, str, int], dict[str, list[dict[str, Any]]]] = {}
    for r in runs:
        groups.setdefault((r["data_key"], r["model_name"], r["epochs"]), {}).setdefault(r["method"], []).append(r)
    for (data_key, model, epochs), by_method in sorted(groups.items(), key=lambda kv: (list(DATASETS).index(kv[0][0]), kv[0][1:])):
        any_run = next(iter(by_method.values()))[0]
        d = any_run["data"]
        n_exp = max(len(v) for v in by_method.values())
        lt = d.get("long_tail")
        lines += [f"## {DATASETS[data_key][0]} — {model}, {epochs} epochs", "",
                  f"Data: train {d['sizes']['train']} / val {d['sizes']['val']} / test {d['sizes']['test']}"
                  + (f"; training class counts {d.get('train_class_counts')} (rho {lt['rho']:.0f}, validation split equally long-tailed, test balanced)" if lt else "")
                  + ".", ""]
        rows, table = [], []
        for method in METHODS:
            rs = sorted(by_method.get(method, []), key=lambda r: r["seed"])
            if not rs:
                continue
            b = {k: [r["best"][k] for r in rs] for k in (*METRICS, "mean_confidence")}
            counts = d.get("train_class_counts") or []
            rare = sorted(range(len(counts)), key=lambda c: counts[c])[:3]
            b["tail3_accuracy"] = [statistics.fmean(r["best"]["per_class_accuracy"][c] for c in rare) for r in rs] if rare else []
            rows.append([METHODS[method][0], str(len(rs)), fmt(b["accuracy"], expected=n_exp),
                         *([fmt(b["tail3_accuracy"], expected=n_exp)] if lt else []),
                         fmt(b["ece"], expected=n_exp), fmt(b["adaece"], expected=n_exp), fmt(b["nll"], scale=1, digits=3, expected=n_exp),
                         fmt(b["temperature"], scale=1, digits=2, expected=n_exp), fmt(b["ece_ts"], expected=n_exp),
                         fmt(b["nll_ts"], scale=1, digits=3, expected=n_exp), fmt(b["mean_confidence"], expected=n_exp),
                         ", ".join(str(r["summary"]["best_epoch"]) for r in rs)])
            table.append({"method": method, "seeds": [r["seed"] for r in rs], "best": b,
                          "last": {k: [r["last"][k] for r in rs] for k in METRICS}})
        header = ["method", "seeds", "acc", *(["acc, 3 rarest classes"] if lt else []), "ECE", "AdaECE", "NLL", "T (val)", "ECE after TS",
                  "NLL after TS", "mean conf.", "best epochs"]
        lines += [md_table(header, rows), ""]
        # last-epoch ECE (short table)
        lrows = []
        for row in table:
            la = row["last"]
            lrows.append([METHODS[row["method"]][0], fmt(la["accuracy"], expected=n_exp), fmt(la["ece"], expected=n_exp),
                          fmt(la["nll"], scale=1, digits=3, expected=n_exp), fmt(la["ece_ts"], expected=n_exp)])
        lines += ["Last-epoch weights (same runs):", "", md_table(["method", "acc", "ECE", "NLL", "ECE after TS"], lrows), ""]
        # verdicts vs CE
        ce = next((t for t in table if t["method"] == "ce"), None)
        if ce is not None:
            verdicts = []
            for row in table:
                if row["method"] == "ce":
                    continue
                parts = []
                for k, name, lower in (("ece", "ECE", True), ("nll", "NLL", True), ("ece_ts", "ECE after TS", True),
                                       ("accuracy", "accuracy", False)):
                    m, s, n = mean_std(row["best"][k])
                    c, cs, nc = mean_std(ce["best"][k])
                    better = (c - m) if lower else (m - c)
                    if min(n, nc) < 2:
                        parts.append(f"{name}: single seed")
                    elif better > s + cs:
                        parts.append(f"{name}: better than CE")
                    elif -better > s + cs:
                        parts.append(f"{name}: **worse** than CE")
                    else:
                        parts.append(f"{name}: not clearly different from CE")
                verdicts.append(f"- {METHODS[row['method']][0]}: " + "; ".join(parts) + ".")
            lines += ["Against CE (\"better\" / \"worse\" only when the mean gap exceeds the sum of the two stds):", "", *verdicts, ""]
        payload["tables"].append({"data": data_key, "model": model, "epochs": epochs, "data_info": d, "rows": table})
    lines += ["![reliability diagrams](calibration.png)", "",
              f"Wall time: {sum(r['wall_seconds'] for r in runs) / 60:.1f} min summed over the {len(runs)} cached runs (training "
              f"plus evaluation, 1 torch thread each, up to two suites running side by side with other jobs on the shared "
              f"2-CPU machine); this invocation {elapsed / 60:.1f} min.", ""]
    (RESULTS / "calibration.md").write_text("\n".join(lines), encoding="utf-8")
    (RESULTS / "calibration.json").write_text(json.dumps(payload, indent=1, default=_json_default), encoding="utf-8")
    plot(runs, RESULTS / "calibration.png")
    print(f"[calibration] wrote {RESULTS / 'calibration.md'}", flush=True)


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    """Reliability diagrams (seed 0, best weights): one panel per dataset, one line per method."""
    runs = [r for r in runs if r["seed"] == min(rr["seed"] for rr in runs)] if runs else []
    if not runs:
        return
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return
    keys = sorted({(r["data_key"], r["model_name"], r["epochs"]) for r in runs}, key=lambda k: (list(DATASETS).index(k[0]), k[1:]))
    fig = Figure(figsize=(5 * len(keys), 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=0.8)
        for method in METHODS:
            r = next((r for r in runs if (r["data_key"], r["model_name"], r["epochs"]) == key and r["method"] == method), None)
            if r is None:
                continue
            rel = r["reliability_best"]
            pts = [(c, a) for c, a, n in zip(rel["confidence"], rel["accuracy"], rel["count"]) if n > 0]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3,
                    label=f"{METHODS[method][0]} (ECE {100 * r['best']['ece']:.1f})")
        ax.set_xlabel("confidence (15 bins)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{DATASETS[key[0]][0]}, {key[1]}, {key[2]} ep (seed {runs[0]['seed']})", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)


if __name__ == "__main__":
    sys.exit(main())
