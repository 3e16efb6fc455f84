"""Susceptibility suite: does the susceptibility zeta track memorisation, and does the selection rule pick good models?

Forouzesh, Sedghi & Thiran, ICLR 2023 (spec ``robust.md`` section 3). Ten small models (MLPs of
different widths/depths, with and without dropout, two small CNNs; different learning rates and epoch
counts) are trained on a noisy Fashion-MNIST subset with ``train.susceptibility={batch_size: 128}``
(the trainer probes the model with random labels on a training batch at the start of every epoch and
logs ``zeta``, the running mean of the one-step loss decreases).

Data: Fashion-MNIST with ``data.noise={kind: uniform, rate: 0.5}`` (every label redrawn uniformly over
the 10 classes with probability 0.5, as the official ``corrupt_prob = 0.5``; realised noise ~45%), a
random 10,000-image subset of the noisy training split (``--train-size``), 2,000 of the noisy validation
split, the clean 10,000-image test set. SGD momentum 0.9, weight decay 5e-4, batch 128, cosine schedule
over each model's epochs, no warm-up (the official setup, with the cosine period set to the run length).

For every model: final zeta, training accuracy on the noisy training labels (whole training set, eval
mode, last epoch), training accuracy on the *noisy subset* (corrupted samples predicted as their noisy
label: the paper's memorisation ground truth), clean-test accuracy (last epoch). Per seed: Spearman
correlations of final zeta with both training accuracies; :func:`tailwise.metrics.select_models`
(training accuracy above the mean and zeta below the mean) and the clean-test accuracy of the selected
models vs the rest. Plot: zeta curves and the zeta / training-accuracy plane.

Run from the repository root::

    python benchmarks/susceptibility_suite.py [--seeds 0 1 2] [--epochs-scale 1.0] [--max-minutes M] [--render-only]

Writes ``benchmarks/results/susceptibility.md``, ``.json`` and ``susceptibility.png``; per-run JSON
in ``benchmarks/results/runs/susceptibility/``.
"""

from __future__ import annotations

import argparse
import json
import math
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
    build_config,
    commands_markdown,
    env_markdown,
    environment,
    fmt,
    logger,
    md_table,
    mean_std,
    noisy_subset_accuracy,
    subset_bundle,
)

SUITE = "susceptibility"

#: name -> (model overrides, lr, epochs)
MODELS: dict[str, tuple[list[str], float, int]] = {
    "mlp-32": (["model=mlp", "model.hidden_dims=[32]"], 0.1, 20),
    "mlp-128": (["model=mlp", "model.hidden_dims=[128]"], 0.1, 20),
    "mlp-512x2": (["model=mlp", "model.hidden_dims=[512, 512]"], 0.1, 20),
    "mlp-512x2-lr0.01": (["model=mlp", "model.hidden_dims=[512, 512]"], 0.01, 20),
    "mlp-1024x2-40ep": (["model=mlp", "model.hidden_dims=[1024, 1024]"], 0.1, 40),
    "mlp-2048-lr0.05-30ep": (["model=mlp", "model.hidden_dims=[2048]"], 0.05, 30),
    "mlp-256x2-dropout0.5": (["model=mlp", "model.hidden_dims=[256, 256]", "model.dropout=0.5"], 0.1, 20),
    "mlp-64-5ep": (["model=mlp", "model.hidden_dims=[64]"], 0.1, 5),
    "cnn-8-16": (["model=small_cnn", "model.channels=[8, 16]", "model.hidden_dim=64"], 0.05, 15),
    "cnn-32-64": (["model=small_cnn"], 0.05, 12),
}


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks at ties)."""
    try:
        from scipy.stats import spearmanr

        return float(spearmanr(a, b).statistic)
    except ImportError:  # pragma: no cover
        def ranks(v: Sequence[float]) -> list[float]:
            order = sorted(range(len(v)), key=lambda i: v[i])
            r = [0.0] * len(v)
            i = 0
            while i < len(order):
                j = i
                while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                    j += 1
                for k in range(i, j + 1):
                    r[order[k]] = (i + j) / 2
                i = j + 1
            return r
        ra, rb = ranks(a), ranks(b)
        ma, mb = statistics.fmean(ra), statistics.fmean(rb)
        cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
        return cov / math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every model's epoch count")
    parser.add_argument("--epochs", type=int, default=None, help="(same as the other suites) one epoch count for all models")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--val-size", type=int, default=2000)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cache, deadline, log = RunCache(SUITE), Deadline(args.max_minutes), logger(args.quiet)
    t0 = time.perf_counter()
    if not args.render_only:
        bundle = None
        for seed in args.seeds:
            for name in args.models:
                overrides, lr, epochs = MODELS[name]
                epochs = args.epochs if args.epochs is not None else max(2, round(epochs * args.epochs_scale))
                key = f"fmnist-u50-n{args.train_size}-{name}-e{epochs}-seed{seed}"
                if cache.get(key) is not None:
                    continue
                if deadline.expired():
                    print(f"[susceptibility] deadline reached; skipping {key}", flush=True)
                    continue
                if bundle is None:
                    from tailwise.data import prepare_data

                    bundle = prepare_data("fashion-mnist", noise={"kind": "uniform", "rate": 0.5}, val_fraction=0.1, seed=0)
                    bundle = subset_bundle(bundle, train=args.train_size, val=args.val_size, seed=0)
                cfg, rescaled = build_config("ce", [
                    "data.name=fashion-mnist", "data.long_tail=null", "data.noise={kind: uniform, rate: 0.5}",
                    *overrides, f"optim.lr={lr}", "optim.weight_decay=0.0005", "schedule.name=cosine",
                    "schedule.warmup_epochs=0", "schedule.milestones=[]", "train.susceptibility={batch_size: 128}",
                ], epochs=epochs, seed=seed, threads=args.threads)
                print(f"[susceptibility] {key}", flush=True)
                r = cache.run(key, cfg, bundle, post=lambda tr: {"train_eval": noisy_subset_accuracy(tr)}, log=log,
                              meta={"suite": SUITE, "rescaled": rescaled, "model_key": name, "seed": seed, "epochs": epochs, "lr": lr,
                                    "train_size": args.train_size})
                print(f"[susceptibility]   zeta {r['history'][-1]['zeta']:.4f} train acc {r['train_eval']['train_acc_noisy_labels']:.4f} "
                      f"memorised {r['train_eval'].get('memorised_noisy', float('nan')):.4f} test {r['test_last']['accuracy']:.4f} "
                      f"({r['wall_seconds']:.0f}s)", flush=True)
    render(args, time.perf_counter() - t0)
    return 0


def render(args: argparse.Namespace, elapsed: float) -> None:
    runs = [r for r in RunCache(SUITE).all() if r.get("suite") == SUITE and r.get("train_size") == args.train_size]
    env = environment(args.threads)
    by_seed: dict[int, list[dict[str, Any]]] = {}
    for r in runs:
        r["zeta_final"] = r["history"][-1]["zeta"]
        r["train_acc"] = r["train_eval"]["train_acc_noisy_labels"]
        r["memorised"] = r["train_eval"].get("memorised_noisy", math.nan)
        r["test_acc"] = r["test_last"]["accuracy"]
        by_seed.setdefault(r["seed"], []).append(r)
    any_run = runs[0] if runs else None
    lines = [
        "# Susceptibility suite: zeta vs memorisation and the Region-1 selection rule",
        "",
        "Forouzesh, Sedghi & Thiran (ICLR 2023). Each model is trained on noisy Fashion-MNIST with "
        "`train.susceptibility={batch_size: 128}` (probe at the start of every epoch on a random training batch "
        "with random labels, one step with a copy of the training optimiser, train mode; `zeta` = running mean of the "
        "loss decreases). `zeta` below is the value logged at the last epoch.",
        "",
        env_markdown(env),
        commands_markdown(runs),
        "- Generated by `benchmarks/susceptibility_suite.py`; per-run JSON in `benchmarks/results/runs/susceptibility/`.",
        "",
    ]
    if any_run is not None:
        d = any_run["data"]
        noise = d.get("noise", {})
        lines += [
            f"Data: Fashion-MNIST, `data.noise={{kind: uniform, rate: 0.5}}` (label redrawn over all 10 classes with "
            f"probability 0.5, as the official `corrupt_prob=0.5`), random subsets (seed 0): train {d['sizes']['train']} "
            f"(realised noise {noise.get('realised_rate_train', float('nan')):.3f}), noisy val {d['sizes']['val']}, "
            f"clean test {d['sizes']['test']}. SGD momentum 0.9, weight decay 5e-4, batch 128, cosine lr over the run, "
            "no warm-up; learning rate and epochs per model as listed. Train accuracies are measured after training "
            "in eval mode on the whole training subset; `memorised` = accuracy on the corrupted samples w.r.t. their "
            "noisy labels (the paper's memorisation measure); test accuracy is the last epoch's on the clean test set.",
            "",
        ]
    # per-model table (mean ± std over seeds)
    seeds = sorted(by_seed)
    n_exp = len(seeds)
    rows = []
    for name in MODELS:
        rs = [r for r in runs if r["model_key"] == name]
        if not rs:
            continue
        rows.append([name, f"{rs[0]['lr']}", str(rs[0]["epochs"]), str(len(rs)),
                     fmt([r["zeta_final"] for r in rs], scale=1.0, digits=4, expected=n_exp),
                     fmt([r["train_acc"] for r in rs], expected=n_exp),
                     fmt([r["memorised"] for r in rs], expected=n_exp),
                     fmt([r["test_acc"] for r in rs], expected=n_exp),
                     f"{statistics.fmean(r['wall_seconds'] for r in rs):.0f}"])
    lines += ["## Models (mean ± std over seeds)", "",
              md_table(["model", "lr", "epochs", "seeds", "final zeta", "train acc, noisy labels (%)",
                        "memorised: noisy subset acc (%)", "clean test acc (%)", "s / run"], rows), ""]
    # per-seed analysis
    per_seed = []
    srows = []
    for seed in seeds:
        rs = sorted(by_seed[seed], key=lambda r: list(MODELS).index(r["model_key"]) if r["model_key"] in MODELS else 99)
        if len(rs) < 3:
            continue
        from tailwise.metrics import select_models

        cand = [{"train_accuracy": r["train_acc"], "zeta": r["zeta_final"]} for r in rs]
        sel = select_models(cand)
        sel_acc = [rs[i]["test_acc"] for i in sel]
        rest_acc = [r["test_acc"] for i, r in enumerate(rs) if i not in sel]
        z = [r["zeta_final"] for r in rs]
        rec = {
            "seed": seed, "n_models": len(rs),
            "spearman_zeta_memorised": spearman(z, [r["memorised"] for r in rs]),
            "spearman_zeta_train_acc": spearman(z, [r["train_acc"] for r in rs]),
            "spearman_zeta_test_acc": spearman(z, [r["test_acc"] for r in rs]),
            "spearman_train_acc_test_acc": spearman([r["train_acc"] for r in rs], [r["test_acc"] for r in rs]),
            "selected": [rs[i]["model_key"] for i in sel],
            "selected_test_acc_mean": statistics.fmean(sel_acc) if sel_acc else math.nan,
            "rest_test_acc_mean": statistics.fmean(rest_acc) if rest_acc else math.nan,
            "best_test_acc_model": max(rs, key=lambda r: r["test_acc"])["model_key"],
            "best_test_acc": max(r["test_acc"] for r in rs),
            "all_test_acc_mean": statistics.fmean(r["test_acc"] for r in rs),
        }
        per_seed.append(rec)
        srows.append([str(seed), str(len(rs)), f"{rec['spearman_zeta_memorised']:+.3f}", f"{rec['spearman_zeta_train_acc']:+.3f}",
                      f"{rec['spearman_zeta_test_acc']:+.3f}", ", ".join(rec["selected"]) or "(none)",
                      ("—" if not sel else f"{100 * rec['selected_test_acc_mean']:.2f}"), f"{100 * rec['rest_test_acc_mean']:.2f}",
                      f"{rec['best_test_acc_model']} ({100 * rec['best_test_acc']:.2f})"])
    if per_seed:
        def col(k: str) -> list[float]:
            return [p[k] for p in per_seed]
        srows.append(["mean ± std", "", fmt(col("spearman_zeta_memorised"), scale=1, digits=3),
                      fmt(col("spearman_zeta_train_acc"), scale=1, digits=3), fmt(col("spearman_zeta_test_acc"), scale=1, digits=3),
                      "", fmt(col("selected_test_acc_mean")), fmt(col("rest_test_acc_mean")), ""])
        lines += ["## Per seed: rank correlations and the selection rule", "",
                  "Spearman correlation of the final zeta with the training accuracy on the noisy subset (memorisation) and "
                  "with the training accuracy on all (noisy) training labels; Region 1 = `tailwise.metrics.select_models` "
                  "(train accuracy on the noisy labels above the mean and zeta below the mean over the seed's models).", "",
                  md_table(["seed", "models", "ρ(zeta, memorised)", "ρ(zeta, train acc)", "ρ(zeta, test acc)",
                            "selected (Region 1)", "selected: mean test acc (%)", "rest: mean test acc (%)",
                            "best model by test acc"], srows), ""]
        gap = [p["selected_test_acc_mean"] - p["rest_test_acc_mean"] for p in per_seed if p["selected"]]
        n_empty = sum(1 for p in per_seed if not p["selected"])
        m_mem = mean_std(col("spearman_zeta_memorised"))[0]
        m_tr = mean_std(col("spearman_zeta_train_acc"))[0]
        lines += ["## Findings", "",
                  f"- zeta vs memorisation: mean Spearman ρ = {m_mem:+.3f} (per seed: "
                  + ", ".join(f"{v:+.2f}" for v in col("spearman_zeta_memorised")) + "); zeta vs training accuracy on all "
                  f"noisy labels: {m_tr:+.3f}. "
                  + ("zeta ranks the models by memorisation as the paper claims (positive correlation)." if m_mem > 0.5 else
                     "The correlation is weak or negative here: zeta does **not** reliably rank these models by memorisation "
                     "in this short-budget setting."),
                  "- Selection rule: selected models' mean clean-test accuracy minus the rest's = "
                  + (", ".join(f"{100 * g:+.2f}" for g in gap) + " points on the seeds with a selection"
                     + f" (mean {100 * statistics.fmean(gap):+.2f})" if gap else "n/a (no seed selected any model)")
                  + (f"; on {n_empty} seed(s) no model lies in Region 1 (nothing selected)" if n_empty else "") + "."
                  + (" The selected models are better on average." if gap and all(g > 0 for g in gap) else
                     " The rule does not consistently pick better-than-average models here."),
                  "- Why: with ~45% label noise a model that does not memorise can reach at most ~55% training accuracy "
                  "on the noisy labels (the clean share), so the mean training accuracy of the pool (per seed: "
                  + ", ".join(f"{100 * statistics.fmean(r['train_acc'] for r in by_seed[p['seed']]):.1f}%" for p in per_seed)
                  + ") is pulled up by the memorising models; \"above the mean\" then mostly means \"memorises\", "
                  "and those models also have high zeta, so Region 1 is nearly empty and the best-generalising models "
                  "(training accuracy near the clean share, low zeta) fall in the low-accuracy region.",
                  "- Does the rule find the best model? Per seed the selected set "
                  + ", ".join(("contains" if p["best_test_acc_model"] in p["selected"] else "misses") + f" the best ({p['best_test_acc_model']})"
                              for p in per_seed) + ".",
                  ""]
    lines += ["![zeta curves](susceptibility.png)", "",
              f"Wall time: {sum(r['wall_seconds'] for r in runs) / 60:.1f} min summed over the {len(runs)} cached runs (training "
              f"plus evaluation, 1 torch thread each, up to two suites running side by side with other jobs on the shared "
              f"2-CPU machine); this invocation {elapsed / 60:.1f} min.", ""]
    (RESULTS / "susceptibility.md").write_text("\n".join(lines), encoding="utf-8")
    payload = {"environment": env, "per_seed": per_seed,
               "runs": [{k: r[k] for k in ("key", "model_key", "seed", "lr", "epochs", "zeta_final", "train_acc", "memorised", "test_acc",
                                           "wall_seconds")} | {"zeta_curve": [h.get("zeta") for h in r["history"]]} for r in runs]}
    (RESULTS / "susceptibility.json").write_text(json.dumps(payload, indent=1, default=_json_default), encoding="utf-8")
    plot(runs, RESULTS / "susceptibility.png")
    print(f"[susceptibility] wrote {RESULTS / 'susceptibility.md'}", flush=True)


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    if not runs:
        return
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return
    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    names = [n for n in MODELS if any(r["model_key"] == n for r in runs)]
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    for i, name in enumerate(names):
        rs = sorted((r for r in runs if r["model_key"] == name), key=lambda r: r["seed"])
        for j, r in enumerate(rs):
            z = [h.get("zeta") for h in r["history"]]
            ax1.plot(range(len(z)), z, color=cmap(i % 10), alpha=0.9 if j == 0 else 0.35, lw=1.4 if j == 0 else 0.8,
                     label=name if j == 0 else None)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("zeta (running mean of probe loss decrease)")
    ax1.set_title("zeta curves (all seeds; first seed bold)")
    ax1.grid(True, alpha=0.3)
    ax1.legend(fontsize=7)
    xs = [r["train_acc"] for r in runs]
    ys = [r["zeta_final"] for r in runs]
    sc = ax2.scatter(xs, ys, c=[100 * r["test_acc"] for r in runs], cmap="viridis", s=30)
    for r in runs:
        if r["seed"] == min(rr["seed"] for rr in runs):
            ax2.annotate(r["model_key"], (r["train_acc"], r["zeta_final"]), fontsize=6)
    ax2.axvline(statistics.fmean(xs), color="gray", ls="--", lw=0.8)
    ax2.axhline(statistics.fmean(ys), color="gray", ls="--", lw=0.8)
    ax2.set_xlabel("train accuracy on noisy labels")
    ax2.set_ylabel("final zeta")
    ax2.set_title("Region 1 = right of / below the dashed means")
    fig.colorbar(sc, ax=ax2, label="clean test acc (%)")
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)


if __name__ == "__main__":
    sys.exit(main())
