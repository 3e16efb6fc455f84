"""Long-tail accuracy suite on CPU: every long-tail recipe against CE on two long-tailed datasets.

Datasets (exponential long tail, rho = 100, LDAM convention; the long-tail subsample and the
validation split follow the run seed):

* ``mnist1d``: MNIST-1D generated offline (``data.options={num_samples: 20000}``: 16,000 train / 4,000
  test before the long tail), 20% of the long-tailed training set held out for validation (as
  ``tailwise demo``), model ``auto`` = ``cnn1d``;
* ``fashion-mnist``: Fashion-MNIST-LT from ``../shared/data/fashion_mnist.npz``, 10% validation, model
  ``auto`` = ``small_cnn``.

Methods: the baselines CE, CE-DRW, focal and class-balanced (CB focal, CB re-weighting, CB re-sampling)
and every long-tail method recipe (LDAM, LDAM-DRW, VS, LA, CDT, Bayias, Bayias+UniMix, CDB-W, CDB-S,
ABSGD, LDAM-DRW+ABSGD); any further shipped recipe with a long tail in its data section is appended
under its recipe name. Each recipe is run as shipped except for the shared data, the seed and the epoch
budget (its schedule is rescaled proportionally; see ``benchmarks/_suite.py``).

Run (from the repository root; resumable: finished runs are cached and skipped)::

    python benchmarks/longtail_suite.py --datasets mnist1d --epochs 50 --max-minutes 40
    python benchmarks/longtail_suite.py --datasets fashion-mnist --epochs 10 --max-minutes 55 \
        --methods CE CE-DRW LDAM-DRW VS LA Bayias+UniMix CDB-W ABSGD Focal "CB focal"
    python benchmarks/longtail_suite.py --datasets fashion-mnist --epochs 10   # resume: the missing runs
    python benchmarks/longtail_suite.py --render-only

Writes ``benchmarks/results/longtail_mnist1d.{md,json}`` and ``benchmarks/results/longtail_fashion_mnist.{md,json}``
and per-run JSON under ``benchmarks/results/runs/longtail/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _suite import DatasetSpec, Method, SuiteSpec, render, run_suite

_LT = "data.long_tail={profile: exp, rho: 100, convention: ldam, seed: 0}"
_COMMON_DATA = ("data.noise=null", "data.val_per_class=null", "data.data_dir=null", "data.augment=null",
                "data.normalize=true", _LT,
                # the test sets are balanced and the validation split is long-tailed: select the epoch on
                # the validation metric that estimates balanced test accuracy (same rule for every method)
                "train.select_metric=balanced_accuracy")

DATASETS = [
    DatasetSpec(
        key="mnist1d",
        title="MNIST-1D-LT (exp, rho = 100)",
        overrides=("data.name=mnist1d", "data.options={num_samples: 20000}", "data.val_fraction=0.2", *_COMMON_DATA),
        default_epochs=50,
        description="MNIST-1D generated offline (20,000 signals, the package's 80/20 train/test split), "
                    "exponential long tail rho = 100 on the training part, 1-D CNN.",
        results_stem="longtail_mnist1d",
    ),
    DatasetSpec(
        key="fashion-mnist",
        title="Fashion-MNIST-LT (exp, rho = 100)",
        overrides=("data.name=fashion-mnist", "data.options={}", "data.val_fraction=0.1", *_COMMON_DATA),
        default_epochs=10,
        description="Fashion-MNIST (60k/10k), exponential long tail rho = 100 on the training set, balanced "
                    "10k test set, small CNN.",
        results_stem="longtail_fashion_mnist",
    ),
]

# label, recipe, note; the order is the run priority
KNOWN_METHODS = [
    Method("CE", "ce"),
    Method("CE-DRW", "ce-drw"),
    Method("LDAM-DRW", "ldam-drw"),
    Method("VS", "vs"),
    Method("LA", "la"),
    Method("Bayias+UniMix", "bayias-unimix"),
    Method("CDB-W", "cdb"),
    Method("ABSGD", "absgd"),
    Method("Focal", "focal"),
    Method("CB focal", "class-balanced"),
    Method("CB reweight", "reweight"),
    Method("CB resample", "cb-resample"),
    Method("LDAM", "ldam"),
    Method("CDT", "cdt"),
    Method("Bayias", "bayias"),
    Method("CDB-S", "cdb-s"),
    Method("LDAM-DRW+ABSGD", "ldam-drw-absgd"),
]


def discover_methods() -> list[Method]:
    """The known methods whose recipe is shipped, plus any other shipped recipe with a long tail."""
    from tailwise.train.config import list_recipes, load_recipe

    shipped = list_recipes()
    methods = [m for m in KNOWN_METHODS if m.recipe in shipped]
    known = {m.recipe for m in KNOWN_METHODS}
    for name in sorted(shipped):
        if name in known:
            continue
        try:
            data = load_recipe(name).get("data") or {}
        except Exception:  # a broken recipe is reported by the library's own tests
            continue
        if data.get("long_tail"):
            methods.append(Method(name, name))
    return methods


def make_suite() -> SuiteSpec:
    return SuiteSpec(
        name="longtail",
        title="Long-tail accuracy suite",
        methods=discover_methods(),
        datasets=DATASETS,
        baseline="CE",
        extra_notes=[
            "Selection metric: `train.select_metric=balanced_accuracy` for every method (the recipes' default is "
            "overall accuracy). The validation split is long-tailed (2-3 samples of the rarest MNIST-1D class, "
            "6 of the rarest Fashion-MNIST class) while the test sets are balanced, so overall validation accuracy mostly measures the head classes; "
            "balanced validation accuracy is the estimate of the balanced test accuracy that the papers report. "
            "The last-epoch column needs no selection at all.",
            "The recipes' own data settings (CDB's `cdb` convention with rho = 200, ABSGD's rho = 10, ...) are "
            "replaced by the suite's shared data so that all methods of a seed train on the same long-tailed set.",
            "Recipes differ in batch size and weight decay (CDB-W/CDB-S: batch 32, wd 5e-4, no warm-up; "
            "Bayias: batch 64; ABSGD: batch 100, one LR drop) as shipped; the comparison is recipe against recipe.",
        ],
    )


def main(argv: list[str] | None = None) -> int:
    suite = make_suite()
    labels = [m.label for m in suite.methods]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=[d.key for d in DATASETS],
                        choices=[d.key for d in DATASETS])
    parser.add_argument("--methods", nargs="+", default=labels, metavar="LABEL",
                        help=f"method labels in run order (default: all): {labels}")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None,
                        help="epoch budget for every dataset given (default: mnist1d 50, fashion-mnist 10, the budgets of the "
                             "committed tables)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop starting new runs after this many minutes, then render the tables")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: fastest on a shared 2-core machine)")
    parser.add_argument("--render-only", action="store_true", help="only render the tables from cached runs")
    args = parser.parse_args(argv)
    unknown = [m for m in args.methods if m not in labels]
    if unknown:
        parser.error(f"unknown method label(s) {unknown}; known: {labels}")
    if suite.baseline not in args.methods:
        print(f"note: the baseline {suite.baseline!r} is not among --methods; it is still shown when cached")
    methods = args.methods
    table_methods = [suite.baseline, *[m for m in labels if m != suite.baseline]]
    epochs = {d: args.epochs for d in args.datasets} if args.epochs else {}
    if not args.render_only:
        stats = run_suite(suite, datasets=args.datasets, methods=methods, seeds=args.seeds, epochs=epochs,
                          max_minutes=args.max_minutes, threads=args.threads)
        print(f"runs: {stats['done']} done, {stats['skipped']} cached, {stats['failed']} failed, "
              f"{stats['not_started']} not started")
        for e in stats["errors"]:
            print(f"  error: {e['dataset']} {e['method']} seed {e['seed']}: {e['error']}")
    render(suite, datasets=args.datasets, methods=table_methods, seeds=args.seeds, epochs=epochs,
           threads=args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
