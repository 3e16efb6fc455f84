"""Reusable runner for the accuracy suites: recipes x datasets x seeds on a shortened schedule.

A suite is a list of :class:`Method` (a label, a shipped recipe, extra ``--set`` style overrides), a list
of :class:`DatasetSpec` (the data overrides every method shares) and a list of seeds. For every
(dataset, seed) the data bundle is built once with :func:`tailwise.data.prepare_data` and handed to
:class:`tailwise.train.trainer.Trainer` (``data=``) for every method, so all methods of one seed see the
same long-tailed training set, the same validation split and the same test set.

What the runner changes in a recipe, and nothing else:

* the data section (dataset, long tail, validation split: the :class:`DatasetSpec` overrides), because
  all methods share one bundle;
* the seed (``train.seed``, ``data.seed``, ``data.long_tail.seed``: model initialisation, sampler and
  augmentation streams, the long-tail subsample and the validation split);
* the length: ``train.epochs`` is set to the budget and every epoch-valued setting of the recipe is
  rescaled by ``budget / recipe epochs`` (:func:`shorten_recipe`): the LR milestones, the warm-up, and
  every component parameter named ``*_epoch`` / ``*_epochs`` (DRW ``weights.switch_epoch``, ABSGD
  ``loss.start_epoch``, ...), so each recipe keeps the *shape* of its own schedule;
* bookkeeping: no progress bar, no plots, CPU, a temporary run folder that is deleted afterwards.

Each recipe keeps its own loss, weights, sampler, transform, model head, optimiser and batch size.
Model selection is the trainer's: the best epoch on the validation split (``train.select_metric`` of the
recipe, or of the dataset overrides); the test split is only evaluated, never used for selection.

Each finished run writes a small JSON (no checkpoints) to
``benchmarks/results/runs/<suite>/<dataset>/<method>/seed<k>.json``; a run whose JSON exists (with the
same epoch budget) is skipped, so a suite can be stopped (``max_minutes``) and resumed later. A run that
fails writes ``seed<k>.error.json`` instead and is retried on the next invocation.

:func:`render` turns the cached runs into a Markdown table per dataset (mean +- sample standard
deviation over seeds) with the difference to the baseline (CE), and a "Findings" paragraph generated
from the numbers by fixed rules (no hand-editing).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

__all__ = [
    "DatasetSpec",
    "Method",
    "SuiteSpec",
    "build_config",
    "environment",
    "render",
    "run_suite",
    "shorten_recipe",
]

METRICS = ("accuracy", "balanced_accuracy", "many_accuracy", "medium_accuracy", "few_accuracy")
_EPOCH_KEY = re.compile(r"_epochs?$")
_COMPONENTS = ("model", "loss", "weights", "sampler", "transform")


# ============================================================================ specifications


@dataclass(frozen=True)
class Method:
    """One row of a table: a shipped recipe plus extra ``key=value`` overrides."""

    label: str
    recipe: str
    overrides: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """One table: the data overrides shared by every method (plus optional per-dataset overrides)."""

    key: str
    title: str
    overrides: tuple[str, ...]
    default_epochs: int
    description: str = ""
    results_stem: str = ""  # e.g. "longtail_mnist1d" -> results/longtail_mnist1d.md/.json


@dataclass
class SuiteSpec:
    """A whole suite: its name (the cache folder), the methods, the datasets, the baseline label."""

    name: str
    methods: list[Method]
    datasets: list[DatasetSpec]
    baseline: str = "CE"
    title: str = ""
    seed_overrides: tuple[str, ...] = ("train.seed={seed}", "data.seed={seed}", "data.long_tail.seed={seed}")
    extra_notes: list[str] = field(default_factory=list)

    def method(self, label: str) -> Method:
        for m in self.methods:
            if m.label == label:
                return m
        raise KeyError(f"unknown method {label!r}; known: {[m.label for m in self.methods]}")

    def dataset(self, key: str) -> DatasetSpec:
        for d in self.datasets:
            if d.key == key:
                return d
        raise KeyError(f"unknown dataset {key!r}; known: {[d.key for d in self.datasets]}")


# ============================================================================ configuration


def _scale_epoch(value: int, scale: float, epochs: int) -> int:
    """A rescaled epoch index: 0 stays 0, anything else becomes at least 1 and at most ``epochs``."""
    if value <= 0:
        return value
    return min(epochs, max(1, math.floor(value * scale + 0.5)))


def _rescale_params(params: dict[str, Any], scale: float, epochs: int, where: str,
                    changes: dict[str, list[Any]]) -> dict[str, Any]:
    out = {}
    for key, value in params.items():
        path = f"{where}.{key}"
        if isinstance(value, dict):
            out[key] = _rescale_params(value, scale, epochs, path, changes)
        elif _EPOCH_KEY.search(key) and isinstance(value, int) and not isinstance(value, bool):
            out[key] = _scale_epoch(value, scale, epochs)
            if out[key] != value:
                changes[path] = [value, out[key]]
        else:
            out[key] = value
    return out


def shorten_recipe(values: dict[str, Any], epochs: int) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Rescale a recipe mapping to ``epochs``: milestones, warm-up and every ``*_epoch(s)`` parameter.

    The scale is ``epochs / recipe train.epochs``. A milestone or switch epoch ``e > 0`` becomes
    ``round(e * scale)`` clamped to ``[1, epochs]``; duplicates are kept (two LR drops that land on the
    same epoch still multiply the rate by ``gamma**2``, as the recipe's total decay). The warm-up keeps
    at least one epoch when the recipe has one.

    Returns:
        ``(values, changes)``: the new mapping and ``{"setting": [old, new]}`` for the record.
    """
    values = copy.deepcopy(values)
    train = dict(values.get("train") or {})
    original = int(train.get("epochs", 200))
    scale = epochs / max(original, 1)
    changes: dict[str, list[Any]] = {"train.epochs": [original, epochs]}
    sched = dict(values.get("schedule") or {})
    if sched.get("milestones"):
        new = sorted(_scale_epoch(int(m), scale, epochs) for m in sched["milestones"])
        changes["schedule.milestones"] = [list(sched["milestones"]), new]
        sched["milestones"] = new
    if int(sched.get("warmup_epochs", 0) or 0) > 0:
        w = int(sched["warmup_epochs"])
        sched["warmup_epochs"] = max(1, math.floor(w * scale + 0.5))
        changes["schedule.warmup_epochs"] = [w, sched["warmup_epochs"]]
    for comp in _COMPONENTS:
        node = values.get(comp)
        if isinstance(node, dict):
            values[comp] = _rescale_params(node, scale, epochs, comp, changes)
    train["epochs"] = int(epochs)
    values["train"], values["schedule"] = train, sched
    return values, changes


def build_config(method: Method, dataset: DatasetSpec, seed: int, epochs: int,
                 seed_overrides: Sequence[str]) -> tuple[Any, dict[str, list[Any]]]:
    """The :class:`RunConfig` of one run and the record of the rescaled settings."""
    from tailwise.train.config import apply_overrides, config_from_dict, load_recipe

    values, changes = shorten_recipe(load_recipe(method.recipe), epochs)
    overrides = [
        *dataset.overrides,
        *(s.format(seed=seed) for s in seed_overrides),
        "train.progress=false",
        "train.plots=false",
        "train.device=cpu",
        *method.overrides,
    ]
    return config_from_dict(apply_overrides(values, overrides)), changes


def _data_key(cfg: Any) -> str:
    import dataclasses

    return json.dumps(dataclasses.asdict(cfg.data), sort_keys=True, default=str)


def _prepare(cfg: Any) -> Any:
    from tailwise.data import prepare_data

    dc = cfg.data
    return prepare_data(dc.name, data_dir=dc.data_dir, long_tail=dc.long_tail, noise=dc.noise,
                        val_fraction=dc.val_fraction, val_per_class=dc.val_per_class, seed=dc.seed, **dc.options)


# ============================================================================ environment


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` (the platform's processor or machine name elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(threads: int | None) -> dict[str, Any]:
    """Machine and versions for the results header."""
    import torch

    import tailwise

    cpu = cpu_name()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs",
        "load_average": load,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "tailwise": getattr(tailwise, "__version__", "unknown"),
        "torch_threads": threads if threads else torch.get_num_threads(),
        "command": "python " + " ".join(shlex.quote(a) for a in [_rel(sys.argv[0]), *sys.argv[1:]]),
    }


def _rel(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


# ============================================================================ cache


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-").lower()


def run_path(suite: str, dataset: str, label: str, seed: int, error: bool = False) -> Path:
    name = f"seed{seed}.error.json" if error else f"seed{seed}.json"
    return RESULTS / "runs" / suite / _slug(dataset) / _slug(label) / name


def _finite(value: Any) -> Any:
    """NaN / inf -> None, recursively (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    text = json.dumps(_finite(json.loads(json.dumps(payload, default=_json_default))), indent=1, allow_nan=False)
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _json_default(value: Any) -> Any:
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _metrics(m: dict[str, Any]) -> dict[str, Any]:
    keep = {k: v for k, v in m.items() if isinstance(v, (int, float)) or k == "per_class_accuracy"}
    return keep


# ============================================================================ running


def run_one(suite: SuiteSpec, method: Method, dataset: DatasetSpec, seed: int, epochs: int, data: Any,
            cfg: Any, changes: dict[str, list[Any]], env: dict[str, Any]) -> dict[str, Any]:
    """Train one run in a temporary folder and return its record (the caller writes it)."""
    from tailwise.train.config import config_to_dict
    from tailwise.train.trainer import Trainer

    tmp = Path(tempfile.mkdtemp(prefix=f"tw-{_slug(method.label)}-"))
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    try:
        trainer = Trainer(cfg, run_dir=tmp, data=data, log=None)
        summary = trainer.fit()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    history = [{k: r.get(k) for k in ("epoch", "lr", "train_loss", "train_accuracy", "val_accuracy",
                                       "val_balanced_accuracy", "epoch_time")} for r in trainer.history]
    return {
        "suite": suite.name,
        "dataset": dataset.key,
        "method": method.label,
        "recipe": method.recipe,
        "method_overrides": list(method.overrides),
        "seed": seed,
        "epochs": epochs,
        "model": summary["model"],
        "select_metric": summary["select_metric"],
        "best_epoch": summary["best_epoch"],
        "best_val_metric": summary["best_val_metric"],
        "test_best": _metrics(summary["test_best"]),
        "test_last": _metrics(summary["test_last"]),
        "class_counts": summary["class_counts"],
        "history": history,
        "rescaled": changes,
        "config": config_to_dict(cfg),
        "train_seconds": summary["train_seconds"],
        "wall_seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - cpu0,
        "environment": env,
    }


def run_suite(suite: SuiteSpec, *, datasets: Sequence[str], methods: Sequence[str], seeds: Sequence[int],
              epochs: dict[str, int], max_minutes: float | None = None, threads: int | None = 1,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every missing (dataset, seed, method) in that order; stop starting runs after ``max_minutes``.

    Runs are ordered dataset by dataset, then seed by seed, then in the order of ``methods``: a budget
    that runs out leaves whole seeds done for the first methods rather than one method at all seeds.

    Returns:
        Counts ``{"done": n, "skipped": n, "failed": n, "not_started": n}`` and the list of errors.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    env = environment(threads)
    start = time.monotonic()
    stats: dict[str, Any] = {"done": 0, "skipped": 0, "failed": 0, "not_started": 0, "errors": []}

    def out_of_time() -> bool:
        return max_minutes is not None and time.monotonic() - start > 60.0 * max_minutes

    for dkey in datasets:
        dataset = suite.dataset(dkey)
        n_epochs = epochs.get(dkey, dataset.default_epochs)
        for seed in seeds:
            bundles: dict[str, Any] = {}
            for label in methods:
                method = suite.method(label)
                path = run_path(suite.name, dkey, label, seed)
                cached = _read(path)
                if cached is not None and cached.get("epochs") == n_epochs:
                    stats["skipped"] += 1
                    continue
                if out_of_time():
                    stats["not_started"] += 1
                    continue
                try:
                    cfg, changes = build_config(method, dataset, seed, n_epochs, suite.seed_overrides)
                    key = _data_key(cfg)
                    if key not in bundles:
                        t = time.perf_counter()
                        bundles[key] = _prepare(cfg)
                        counts = bundles[key].train.class_counts().tolist()
                        log(f"[{dkey} seed {seed}] data built in {time.perf_counter() - t:.1f}s: train counts "
                            f"{counts}, val {len(bundles[key].val)}, test {len(bundles[key].test)}")
                    record = run_one(suite, method, dataset, seed, n_epochs, bundles[key], cfg, changes, env)
                except Exception as err:  # a failed run is recorded and retried next time
                    stats["failed"] += 1
                    message = f"{type(err).__name__}: {err}"
                    stats["errors"].append({"dataset": dkey, "method": label, "seed": seed, "error": message})
                    _write_json(run_path(suite.name, dkey, label, seed, error=True), {
                        "dataset": dkey, "method": label, "recipe": method.recipe, "seed": seed,
                        "epochs": n_epochs, "error": message, "traceback": traceback.format_exc(),
                        "environment": env,
                    })
                    log(f"[{dkey} seed {seed}] {label}: FAILED {message}")
                    continue
                _write_json(path, record)
                run_path(suite.name, dkey, label, seed, error=True).unlink(missing_ok=True)
                stats["done"] += 1
                b = record["test_best"]
                log(f"[{dkey} seed {seed}] {label:16s} acc {100 * b['accuracy']:5.1f}  bal "
                    f"{100 * b['balanced_accuracy']:5.1f}  few {_pct(b.get('few_accuracy'))}  best ep "
                    f"{record['best_epoch']:3d}  {record['wall_seconds']:.0f}s  (elapsed "
                    f"{(time.monotonic() - start) / 60:.1f} min)")
    if stats["not_started"]:
        log(f"time budget of {max_minutes} min reached: {stats['not_started']} run(s) not started")
    return stats


# ============================================================================ rendering


def _pct(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:.1f}"


def _mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return math.nan, math.nan
    mean = statistics.fmean(vals)
    std = statistics.stdev(vals) if len(vals) > 1 else math.nan
    return mean, std


def _fmt_ms(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    if math.isnan(std):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def _fmt_secs(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:.0f}"


def _fmt_delta(d: float | None) -> str:
    if d is None or math.isnan(d):
        return "n/a"
    return f"{100 * d:+.1f}"


def collect(suite: SuiteSpec, dataset: DatasetSpec, methods: Sequence[str], seeds: Sequence[int],
            epochs: int) -> dict[str, Any]:
    """Cached records of one dataset: ``{label: {"runs": {seed: record}, "errors": {seed: record},
    "other_epochs": {seed: epochs}}}``."""
    out: dict[str, Any] = {}
    for label in methods:
        runs, errors, other = {}, {}, {}
        for seed in seeds:
            rec = _read(run_path(suite.name, dataset.key, label, seed))
            if rec is not None and rec.get("epochs") == epochs:
                runs[seed] = rec
            elif rec is not None:
                other[seed] = rec.get("epochs")
            err = _read(run_path(suite.name, dataset.key, label, seed, error=True))
            if err is not None and seed not in runs:
                errors[seed] = err
        out[label] = {"runs": runs, "errors": errors, "other_epochs": other}
    return out


def summarise(suite: SuiteSpec, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-method means, standard deviations and paired differences to the baseline."""
    base = data.get(suite.baseline, {}).get("runs", {})
    rows = []
    for label, entry in data.items():
        runs = entry["runs"]
        row: dict[str, Any] = {"method": label, "recipe": suite.method(label).recipe,
                               "seeds": sorted(runs), "n": len(runs)}
        for m in METRICS:
            row[m] = _mean_std([r["test_best"].get(m) for r in runs.values()])
        row["last_accuracy"] = _mean_std([r["test_last"].get("accuracy") for r in runs.values()])
        row["best_epoch"] = [r["best_epoch"] for r in runs.values()]
        row["wall_seconds"] = statistics.fmean([r["wall_seconds"] for r in runs.values()]) if runs else math.nan
        row["batch_size"] = next((r["config"]["train"]["batch_size"] for r in runs.values()), None)
        row["lr"] = next((r["config"]["optim"]["lr"] for r in runs.values()), None)
        row["errors"] = {s: e["error"] for s, e in entry["errors"].items()}
        row["rescaled"] = next((r["rescaled"] for r in runs.values()), None)
        common = sorted(set(runs) & set(base))
        for which, m, name in (("test_best", "accuracy", "accuracy"), ("test_best", "balanced_accuracy", "balanced_accuracy"),
                               ("test_best", "few_accuracy", "few_accuracy"), ("test_last", "accuracy", "last_accuracy")):
            diffs = [runs[s][which][m] - base[s][which][m] for s in common
                     if runs[s][which].get(m) is not None and base[s][which].get(m) is not None
                     and not math.isnan(runs[s][which][m]) and not math.isnan(base[s][which][m])]
            row[f"delta_{name}"] = statistics.fmean(diffs) if diffs else math.nan
            row[f"diffs_{name}"] = diffs
        row["val_swing"] = _mean_std([_val_swing(r) for r in runs.values()])[0]
        stage = [v[1] for k, v in (row["rescaled"] or {}).items() if k.endswith(("switch_epoch", "start_epoch"))]
        row["stage_epoch"] = max(stage) if stage else None
        row["selected_before_stage"] = (sum(1 for e in row["best_epoch"] if e < row["stage_epoch"])
                                        if row["stage_epoch"] else 0)
        row["paired_seeds"] = common
        row["verdict"] = _verdict(row, label == suite.baseline)
        rows.append(row)
    return rows


def _val_swing(record: dict[str, Any]) -> float:
    """Mean absolute change of validation accuracy between consecutive epochs before the first LR drop."""
    history = record["history"]
    milestones = record["config"]["schedule"].get("milestones") or []
    stop = min(milestones) if milestones and record["config"]["schedule"].get("name") == "multistep" else len(history)
    acc = [h["val_accuracy"] for h in history[:stop]]
    if len(acc) < 2:
        return math.nan
    return statistics.fmean(abs(acc[i + 1] - acc[i]) for i in range(len(acc) - 1))


SWING_LIMIT = 0.15


def _verdict(row: dict[str, Any], is_baseline: bool) -> str:
    """Fixed rule on the paired per-seed differences of overall test accuracy to the baseline."""
    if is_baseline:
        return "baseline"
    diffs = row["diffs_accuracy"]
    if not diffs:
        return "no paired seeds"
    mean = statistics.fmean(diffs)
    if all(d == 0 for d in diffs):
        return "same as CE" + (" (1 seed)" if len(diffs) == 1 else "")
    if len(diffs) == 1:
        return "above CE (1 seed)" if mean > 0 else "below CE (1 seed)"
    if all(d > 0 for d in diffs):
        return "beats CE"
    if all(d < 0 for d in diffs):
        return "below CE"
    return "mixed (higher mean)" if mean > 0 else "mixed (lower mean)"


def render_dataset(suite: SuiteSpec, dataset: DatasetSpec, methods: Sequence[str], seeds: Sequence[int],
                   epochs: int, threads: int | None, out_stem: Path) -> dict[str, Any]:
    """Write ``<out_stem>.md`` and ``<out_stem>.json`` for one dataset; returns the JSON payload."""
    data = collect(suite, dataset, methods, seeds, epochs)
    rows = summarise(suite, data)
    env = environment(threads)
    any_run = next((r for e in data.values() for r in e["runs"].values()), None)
    run_commands = sorted({r["environment"]["command"] for e in data.values() for r in e["runs"].values()})
    run_envs = sorted({(r["environment"]["machine"], r["environment"]["torch"], r["environment"]["tailwise"],
                        r["environment"]["python"], r["environment"]["torch_threads"])
                       for e in data.values() for r in e["runs"].values()})
    total = len(methods) * len(seeds)
    finished = sum(r["n"] for r in rows)

    lines = [f"# {dataset.title}: long-tail accuracy suite (CPU)", ""]
    if dataset.description:
        lines += [dataset.description, ""]
    if any_run is not None:
        counts = any_run["class_counts"]
        cfg = any_run["config"]
        lines += [
            f"- Data: `{cfg['data']['name']}`, long tail {json.dumps(cfg['data']['long_tail'])} (seed = run seed), "
            f"validation fraction {cfg['data']['val_fraction']}, options {json.dumps(cfg['data']['options'])}; "
            f"model `{any_run['model']}`. Train class counts (seed {any_run['seed']}): {counts}.",
            f"- Shot groups by training count (OLTR rule: many > 100, few < 20): "
            f"{int(any_run['test_best'].get('num_many_classes', 0))} many, "
            f"{int(any_run['test_best'].get('num_medium_classes', 0))} medium, "
            f"{int(any_run['test_best'].get('num_few_classes', 0))} few classes"
            + (" (no few-shot class here, so `few` is n/a)."
               if int(any_run['test_best'].get('num_few_classes', 0)) == 0 else "."),
        ]
    lines += [
        f"- Schedule: {epochs} epochs per run; each recipe's own epoch-valued settings (LR milestones, warm-up, "
        "DRW `weights.switch_epoch`, ABSGD `loss.start_epoch`, ...) rescaled by epochs / recipe epochs; each "
        "recipe keeps its own loss, weights, sampler, transform, head, optimiser and batch size.",
        f"- Selection: the best epoch on the validation split (held out from the long-tailed training set) by "
        f"`{any_run['select_metric'] if any_run else 'n/a'}`; the test split is only evaluated, never used for selection.",
        f"- Seeds: {list(seeds)} (model init, sampler/augmentation streams, long-tail subsample, validation "
        f"split). Runs finished: {finished} of {total}.",
        f"- Machine: {env['machine']}; Python {env['python']}, torch {env['torch']}, tailwise {env['tailwise']}; "
        f"{env['torch_threads']} torch thread(s) per run; load average at render {env['load_average']} "
        "(the machine is shared, so wall times are indicative only).",
    ]
    if run_envs and any(e[:4] != (env["machine"], env["torch"], env["tailwise"], env["python"]) for e in run_envs):
        lines.append(f"- Runs were produced on: {[list(e) for e in run_envs]}.")
    lines += ["- Run command(s): " + ", ".join(f"`{c}`" for c in run_commands) if run_commands else
              "- Run command(s): none yet",
              f"- Render command: `{env['command']}`", ""]

    lines += [
        "Test accuracy (%) of the best-on-validation epoch, mean ± sample std over seeds; `last` is the "
        "last epoch's overall accuracy; Δ are paired (same-seed) mean differences to CE in points. "
        "`Δ last` compares the last epochs (no selection). Verdict rule on the best-epoch overall accuracy: "
        "*beats CE* / *below CE* when the paired difference has the same sign on every paired seed (at least 2), "
        "*mixed* otherwise.",
        "",
        "| method | recipe | seeds | overall | balanced | many | medium | few | last | Δ overall | Δ balanced "
        "| Δ few | Δ last | verdict | best epochs | s/run |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | `{r['recipe']}` | {r['n']}/{len(seeds)} | {_fmt_ms(*r['accuracy'])} | "
            f"{_fmt_ms(*r['balanced_accuracy'])} | {_fmt_ms(*r['many_accuracy'])} | {_fmt_ms(*r['medium_accuracy'])} | "
            f"{_fmt_ms(*r['few_accuracy'])} | {_fmt_ms(*r['last_accuracy'])} | "
            f"{'—' if r['method'] == suite.baseline else _fmt_delta(r['delta_accuracy'])} | "
            f"{'—' if r['method'] == suite.baseline else _fmt_delta(r['delta_balanced_accuracy'])} | "
            f"{'—' if r['method'] == suite.baseline else _fmt_delta(r['delta_few_accuracy'])} | "
            f"{'—' if r['method'] == suite.baseline else _fmt_delta(r['delta_last_accuracy'])} | {r['verdict']} | "
            f"{','.join(str(e) for e in r['best_epoch']) or '—'} | "
            f"{_fmt_secs(r['wall_seconds'])} |"
        )
    lines += ["", "## Findings", "", findings(suite, rows, epochs, len(seeds)), ""]

    missing = []
    for label, entry in data.items():
        not_run = []
        for seed in seeds:
            if seed in entry["runs"]:
                continue
            if seed in entry["errors"]:
                missing.append(f"{label} seed {seed}: failed — {entry['errors'][seed]['error']}")
            elif seed in entry["other_epochs"]:
                missing.append(f"{label} seed {seed}: only a run with {entry['other_epochs'][seed]} epochs is cached")
            else:
                not_run.append(seed)
        if not_run:
            missing.append(f"{label}: seed(s) {', '.join(map(str, not_run))} not run")
    if missing:
        lines += ["## Missing runs", ""] + [f"- {m}" for m in missing] + [""]

    lines += ["## Schedules as run (recipe → suite)", "",
              "| method | batch | lr | rescaled settings |", "|---|---:|---:|---|"]
    for r in rows:
        if r["rescaled"] is None:
            continue
        desc = "; ".join(f"`{k}` {v[0]} → {v[1]}" for k, v in r["rescaled"].items())
        lines.append(f"| {r['method']} | {r['batch_size']} | {r['lr']} | {desc} |")
    lines += [""] + [f"- {n}" for n in suite.extra_notes] + [
        f"- Per-run JSON (config, rescaled settings, per-epoch validation curve, test metrics of the best and "
        f"the last epoch, timings): `benchmarks/results/runs/{suite.name}/{_slug(dataset.key)}/<method>/seed<k>.json`.",
        "",
    ]
    md = "\n".join(lines)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    out_stem.with_suffix(".md").write_text(md, encoding="utf-8")
    payload = {
        "suite": suite.name, "dataset": dataset.key, "epochs": epochs, "seeds": list(seeds),
        "environment": env, "run_commands": run_commands, "finished_runs": finished, "total_runs": total,
        "missing": missing,
        "rows": [{k: v for k, v in r.items() if k != "rescaled"} for r in rows],
    }
    _write_json(out_stem.with_suffix(".json"), payload)
    return payload


def findings(suite: SuiteSpec, rows: list[dict[str, Any]], epochs: int, n_seeds: int) -> str:
    """A paragraph generated from the numbers by fixed rules."""
    base = next((r for r in rows if r["method"] == suite.baseline), None)
    if base is None or base["n"] == 0:
        return "No baseline (CE) run is finished yet, so no comparison can be made."
    others = [r for r in rows if r["method"] != suite.baseline and r["n"] > 0]
    if not others:
        return "Only the baseline has finished runs."
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in others:
        groups.setdefault(r["verdict"], []).append(r)

    def names(rs: list[dict[str, Any]]) -> str:
        rs = sorted(rs, key=lambda r: -(r["delta_accuracy"] if not math.isnan(r["delta_accuracy"]) else -1e9))
        return ", ".join(f"{r['method']} ({_fmt_delta(r['delta_accuracy'])})" for r in rs)

    parts = [
        f"CE reaches {_fmt_ms(*base['accuracy'])}% overall / {_fmt_ms(*base['balanced_accuracy'])}% balanced "
        f"test accuracy after {epochs} epochs ({base['n']} seed(s))."
    ]
    paired = sorted({len(r["paired_seeds"]) for r in others})
    if paired and paired[-1] < n_seeds:
        parts.append(f"Only {'/'.join(map(str, paired))} of the {n_seeds} planned seeds are finished and paired with CE, "
                     "so every verdict below rests on that many seeds (a sign that agrees on 2 seeds is weak evidence).")
    beats = groups.get("beats CE", [])
    below = groups.get("below CE", [])
    mixed = groups.get("mixed (higher mean)", []) + groups.get("mixed (lower mean)", [])
    same = groups.get("same as CE", []) + groups.get("same as CE (1 seed)", [])
    single = groups.get("above CE (1 seed)", []) + groups.get("below CE (1 seed)", [])
    parts.append(f"Beat CE on every paired seed ({len(beats)} of {len(others)} methods): " + (names(beats) if beats else "none") + ".")
    parts.append(f"Below CE on every paired seed ({len(below)}): " + (names(below) if below else "none") + ".")
    if mixed:
        parts.append(f"Not separable from CE (the sign differs across seeds): {names(mixed)}.")
    if same:
        parts.append("Identical test accuracy to CE on every paired seed: " + ", ".join(r["method"] for r in same) + ".")
    if single:
        parts.append(f"Only one paired seed so far: {names(single)}.")
    valid = [r for r in others if not math.isnan(r["accuracy"][0])]
    if valid:
        top = max(valid, key=lambda r: r["accuracy"][0])
        parts.append(f"Highest mean overall accuracy: {top['method']} ({_fmt_ms(*top['accuracy'])}%).")
    few = [r for r in others if not math.isnan(r["delta_few_accuracy"])]
    if few:
        best_few = max(few, key=lambda r: r["delta_few_accuracy"])
        parts.append(f"Largest few-shot gain over CE: {best_few['method']} ({_fmt_delta(best_few['delta_few_accuracy'])} "
                     "points on the few-shot classes).")
        worse_few = [r["method"] for r in few if r["delta_few_accuracy"] < 0]
        if worse_few:
            parts.append("Lower few-shot accuracy than CE: " + ", ".join(worse_few) + ".")
    last_up = [r for r in others if len(r["diffs_last_accuracy"]) >= 2 and all(d > 0 for d in r["diffs_last_accuracy"])]
    last_down = [r for r in others if len(r["diffs_last_accuracy"]) >= 2 and all(d < 0 for d in r["diffs_last_accuracy"])]
    if any(len(r["diffs_last_accuracy"]) >= 2 for r in others):
        parts.append("At the last epoch (no selection at all), above CE on every paired seed: "
                     + (", ".join(f"{r['method']} ({_fmt_delta(r['delta_last_accuracy'])})" for r in last_up) or "none")
                     + "; below CE on every paired seed: "
                     + (", ".join(f"{r['method']} ({_fmt_delta(r['delta_last_accuracy'])})" for r in last_down) or "none")
                     + ".")
    early = [r for r in others if r["selected_before_stage"]]
    if early:
        parts.append("Runs whose selected epoch precedes the method's second stage (DRW switch / ABSGD start), so "
                     "that the reported best-epoch numbers are those of its first stage: "
                     + ", ".join(f"{r['method']} ({r['selected_before_stage']} of {r['n']}, stage from epoch "
                                 f"{r['stage_epoch']})" for r in early) + ".")
    unstable = [r for r in others if not math.isnan(r["val_swing"]) and r["val_swing"] > SWING_LIMIT]
    if unstable:
        parts.append(
            f"Unstable training (validation accuracy changes by more than {100 * SWING_LIMIT:.0f} points per epoch on "
            f"average before the first LR drop; CE: {100 * base['val_swing']:.1f}): "
            + ", ".join(f"{r['method']} ({100 * r['val_swing']:.1f})" for r in unstable) + ".")
    spread = [r["accuracy"][1] for r in rows if not math.isnan(r["accuracy"][1])]
    if spread:
        parts.append(f"The seed standard deviation of overall accuracy ranges {100 * min(spread):.1f}–"
                     f"{100 * max(spread):.1f} points (CE: {_fmt_ms(base['accuracy'][1], math.nan)}), so differences "
                     "smaller than that are not meaningful at this number of seeds.")
    parts.append(f"These are {epochs}-epoch CPU proxies of 200-epoch CIFAR recipes with rescaled schedules and "
                 "no per-dataset tuning; a method that does not beat CE here is reported as such, not tuned until it does.")
    return " ".join(parts)


def render(suite: SuiteSpec, *, datasets: Sequence[str], methods: Sequence[str], seeds: Sequence[int],
           epochs: dict[str, int], threads: int | None, log: Callable[[str], None] = print) -> None:
    for dkey in datasets:
        dataset = suite.dataset(dkey)
        n_epochs = epochs.get(dkey, dataset.default_epochs)
        stem = RESULTS / (dataset.results_stem or f"{suite.name}_{_slug(dkey)}")
        payload = render_dataset(suite, dataset, methods, seeds, n_epochs, threads, stem)
        log(f"wrote {stem.with_suffix('.md').relative_to(ROOT)} ({payload['finished_runs']}/{payload['total_runs']} runs)")
