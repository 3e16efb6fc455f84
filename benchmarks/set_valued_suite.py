"""Set-valued suite: top-K vs average-K error of a trained CE model (Fashion-MNIST and CIFAR-10).

Lorieul, Joly & Shasha, "Classification Under Ambiguity: When Is Average-K Better Than Top-K?"
(spec ``robust.md`` section 4). A CE model is trained with the ``ce`` recipe's protocol (shortened
schedule, no long tail); with its best-on-validation weights:

* top-K sets: the K most probable classes of each test image;
* average-K sets: ``{j : p_j(x) >= lambda_K}`` with ``lambda_K`` estimated on the *validation* split's
  softmax probabilities (:func:`tailwise.metrics.average_k_threshold`, midpoint rule, as PlantNet-300K)
  so that the validation mean set size is exactly K; applied to the test split, whose mean set size is
  then close to (not exactly) K.

Reported at K = 1, 2, 3: test set error of both (and the average-K test mean set size), plus the
error-vs-set-size curve (:func:`tailwise.metrics.error_vs_set_size_curve`,
:func:`tailwise.metrics.plot_error_vs_set_size`) over K in {0.5, ..., 5}.

Datasets: Fashion-MNIST (MLP 784-256-256-10 by default, 54,000 train / 6,000 val / 10,000 test) and
CIFAR-10 (the JPEG-75 copy, ResNet-32, a short budget: a random ``--cifar-train-size`` subset of the
45,000 training images, ``--cifar-val-size`` of the 5,000 validation images, the full 10,000-image
test set).

Run from the repository root::

    python benchmarks/set_valued_suite.py [--seeds 0 1 2] [--epochs 15] [--cifar-epochs 5] [--max-minutes M] [--render-only]

Writes ``benchmarks/results/set_valued.md`` / ``.json`` and ``set_valued_<dataset>.png``; per-run
JSON in ``benchmarks/results/runs/set_valued/``.
"""

from __future__ import annotations

import argparse
import json
import math
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
    md_table,
    mean_std,
    subset_bundle,
)

SUITE = "set_valued"
KS = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0]
TABLE_KS = [1, 2, 3]
LABELS = {"fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10 (JPEG-75 copy)"}


def post(trainer: Any) -> dict[str, Any]:
    from tailwise.metrics import average_k_sets, average_k_threshold, error_vs_set_size_curve, set_error

    model = best_model(trainer)
    _, val_logits = trainer.evaluate("val", model)
    _, test_logits = trainer.evaluate("test", model)
    p_val, p_test = torch.softmax(val_logits.double().cpu(), 1), torch.softmax(test_logits.double().cpu(), 1)
    y_test = trainer.data.test.y.cpu()
    curve = error_vs_set_size_curve(p_val, p_test, y_test, KS)
    # diagnostic: average-K with the threshold fitted on the test probabilities themselves (in-sample, mean size
    # exactly K), to separate the set-size drift of the validation threshold from the average-K effect
    lam = average_k_threshold(p_test, [float(k) for k in TABLE_KS])
    in_sample = {str(k): float(set_error(average_k_sets(p_test, lam[i]), y_test)) for i, k in enumerate(TABLE_KS)}
    return {"avgk_error_test_threshold": in_sample,"curve": {"ks": curve.ks.tolist(), "thresholds": curve.thresholds.tolist(), "topk_error": curve.topk_error.tolist(),
                      "avgk_error": curve.avgk_error.tolist(), "avgk_mean_set_size": curve.avgk_mean_set_size.tolist()},
            "test_top1_accuracy_best": float((p_test.argmax(1) == y_test).double().mean())}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_args(parser, epochs=15, seeds=[0, 1, 2])
    parser.add_argument("--cifar-epochs", type=int, default=5)
    parser.add_argument("--data", nargs="+", default=list(LABELS), choices=list(LABELS))
    parser.add_argument("--fmnist-model", default="mlp")
    parser.add_argument("--cifar-train-size", type=int, default=10000)
    parser.add_argument("--cifar-lr", type=float, default=0.02,
                        help="SGD lr for ResNet-32 on CIFAR-10 (the recipe's 0.1 trains too slowly in a few short epochs)")
    parser.add_argument("--cifar-val-size", type=int, default=2000)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cache, deadline, log = RunCache(SUITE), Deadline(args.max_minutes), logger(args.quiet)
    t0 = time.perf_counter()
    if not args.render_only:
        from tailwise.data import prepare_data

        for dataset in args.data:
            bundle = None
            cifar = dataset == "cifar10"
            epochs = args.cifar_epochs if cifar else args.epochs
            tag = f"resnet32-n{args.cifar_train_size}-lr{args.cifar_lr:g}" if cifar else f"{args.fmnist_model}-nall"
            for seed in args.seeds:
                key = f"{dataset}-{tag}-ce-e{epochs}-seed{seed}"
                if cache.get(key) is not None:
                    continue
                if deadline.expired():
                    print(f"[set_valued] deadline reached; skipping {key}", flush=True)
                    continue
                if bundle is None:
                    bundle = prepare_data(dataset, val_fraction=0.1, seed=0)
                    if cifar:
                        bundle = subset_bundle(bundle, train=args.cifar_train_size, val=args.cifar_val_size, seed=0)
                model = ["model=resnet32", f"optim.lr={args.cifar_lr}"] if cifar else [f"model={args.fmnist_model}"]
                cfg, rescaled = build_config("ce", [f"data.name={dataset}", "data.long_tail=null", *model],
                                   epochs=epochs, seed=seed, threads=args.threads)
                print(f"[set_valued] {key}", flush=True)
                r = cache.run(key, cfg, bundle, post=post, log=log,
                              meta={"suite": SUITE, "rescaled": rescaled, "dataset_key": dataset, "tag": tag, "seed": seed, "epochs": epochs})
                c = r["curve"]
                print(f"[set_valued]   top1 {r['test_top1_accuracy_best']:.4f}  top-K err {c['topk_error'][2]:.4f}/{c['topk_error'][6]:.4f}  "
                      f"avg-K err {c['avgk_error'][2]:.4f}/{c['avgk_error'][6]:.4f} ({r['wall_seconds']:.0f}s)", flush=True)
    render(args, time.perf_counter() - t0)
    return 0


def render(args: argparse.Namespace, elapsed: float) -> None:
    from tailwise.metrics import SetSizeCurve, plot_error_vs_set_size

    runs = [r for r in RunCache(SUITE).all() if r.get("suite") == SUITE]
    env = environment(args.threads)
    lines = [
        "# Set-valued suite: top-K vs average-K error of a CE model",
        "",
        "Set error P(y ∉ S(x)) on the test split in %, mean ± sample std over training seeds. Average-K threshold "
        "estimated on the validation split's softmax probabilities (midpoint rule: validation mean set size exactly K), "
        "applied to the test split; `avg-K size` is the resulting mean test set size. Best-on-validation weights. "
        "`Δ` = average-K error − top-K error (negative: average-K better).",
        "",
        env_markdown(env),
        commands_markdown(runs),
        "- Generated by `benchmarks/set_valued_suite.py`; per-run JSON in `benchmarks/results/runs/set_valued/`.",
        "",
        "Protocol: the `ce` recipe (SGD 0.1, momentum 0.9, weight decay 2e-4, batch 128; its 5-epoch warm-up and x0.01 "
        "steps at 160/180 of 200 epochs scaled to the shortened run) with `data.long_tail=null`.",
        "",
    ]
    payload: dict[str, Any] = {"environment": env, "tables": []}
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["dataset_key"], r["tag"], r["epochs"]), []).append(r)
    for (dataset, tag, epochs), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["seed"])
        d = rs[0]["data"]
        n = len(rs)
        model = rs[0]["summary"]["model"]
        cfg = rs[0]["config"]
        lines += [f"## {LABELS.get(dataset, dataset)} — {model}, {epochs} epochs, lr {cfg['optim']['lr']:g} "
                  f"(warm-up {cfg['schedule']['warmup_epochs']}, x0.01 at {cfg['schedule']['milestones']}), {n} seed(s)", "",
                  f"Data: train {d['sizes']['train']} / val {d['sizes']['val']} / test {d['sizes']['test']}"
                  + (f" (random subsets, seed 0, of {d['subset']['from_sizes']})" if "subset" in d else "")
                  + f". Top-1 test accuracy (best weights): {fmt([r['test_top1_accuracy_best'] for r in rs])}.", ""]
        rows, table = [], []
        ks = rs[0]["curve"]["ks"]
        for k in TABLE_KS:
            i = ks.index(float(k))
            top = [r["curve"]["topk_error"][i] for r in rs]
            avg = [r["curve"]["avgk_error"][i] for r in rs]
            size = [r["curve"]["avgk_mean_set_size"][i] for r in rs]
            delta = [a - t for a, t in zip(avg, top)]
            oracle = [r.get("avgk_error_test_threshold", {}).get(str(k), math.nan) for r in rs]
            rows.append([str(k), fmt(top), fmt(avg), fmt(size, scale=1, digits=3), fmt(delta), fmt(oracle)])
            table.append({"k": k, "topk_error": top, "avgk_error": avg, "avgk_test_mean_set_size": size, "delta": delta})
        lines += [md_table(["K", "top-K error", "average-K error", "avg-K test mean set size", "Δ (avg − top)",
                            "avg-K error, threshold fitted on test (size exactly K; diagnostic only)"], rows), ""]
        verdict = []
        for row in table:
            m, _, cnt = mean_std(row["delta"])
            if cnt < 2:
                verdict.append(f"K={row['k']}: single seed ({100 * m:+.2f} points)")
            elif m < 0 and all(v < 0 for v in row["delta"]):
                verdict.append(f"K={row['k']}: average-K lower error in every seed ({100 * m:+.2f} points)")
            elif m > 0 and all(v > 0 for v in row["delta"]):
                verdict.append(f"K={row['k']}: average-K **higher** error in every seed ({100 * m:+.2f} points)")
            else:
                verdict.append(f"K={row['k']}: no consistent difference ({100 * m:+.2f} points)")
        lines += ["- " + "; ".join(verdict) + ". Note the average-K test set size is not exactly K (threshold from validation).", ""]
        # mean curve plot
        f64 = torch.float64
        mean_curve = {name: torch.tensor([sum(r["curve"][name][j] for r in rs) / n for j in range(len(ks))], dtype=f64)
                      for name in ("thresholds", "topk_error", "avgk_error", "avgk_mean_set_size")}
        curve = SetSizeCurve(ks=torch.tensor(ks, dtype=f64), **mean_curve)
        png = RESULTS / f"set_valued_{dataset}.png"
        plot_error_vs_set_size(curve, png, title=f"{LABELS.get(dataset, dataset)}, {model}, {epochs} ep (mean of {n} seeds)")
        crow = [[f"{k:g}", "—" if math.isnan(t) else f"{100 * t:.2f}", f"{100 * a:.2f}", f"{s:.3f}"]
                for k, t, a, s in zip(ks, curve.topk_error.tolist(), curve.avgk_error.tolist(), curve.avgk_mean_set_size.tolist())]
        lines += [f"Error-vs-set-size curve (mean over seeds; ![plot]({png.name})):", "",
                  md_table(["K", "top-K error (%)", "average-K error (%)", "avg-K test mean size"], crow), ""]
        payload["tables"].append({"dataset": dataset, "tag": tag, "epochs": epochs, "seeds": [r["seed"] for r in rs],
                                  "rows": table, "mean_curve": {k: v.tolist() for k, v in curve.__dict__.items()}})
    lines += [f"Wall time: {sum(r['wall_seconds'] for r in runs) / 60:.1f} min summed over the {len(runs)} cached runs (training "
              f"plus evaluation, 1 torch thread each, up to two suites running side by side with other jobs on the shared "
              f"2-CPU machine); this invocation {elapsed / 60:.1f} min.", ""]
    (RESULTS / "set_valued.md").write_text("\n".join(lines), encoding="utf-8")
    (RESULTS / "set_valued.json").write_text(json.dumps(payload, indent=1, default=_json_default), encoding="utf-8")
    print(f"[set_valued] wrote {RESULTS / 'set_valued.md'}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
