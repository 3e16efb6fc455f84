"""``tailwise certify``: randomized-smoothing certification of a trained run on a test subset."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["certify_run"]

RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


def certify_run(
    run: Path,
    *,
    sigma: float | None = None,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    num_images: int = 500,
    checkpoint: str = "best",
    seed: int = 0,
    out: Path | None = None,
) -> dict[str, Any]:
    """Certify ``num_images`` evenly spaced test images of a run (Cohen et al.'s CERTIFY).

    Writes ``certify.tsv`` (one row per image), ``certify.json`` / ``certify.md`` (certified accuracy at
    radii 0 to 2 and the average certified radius) and ``certified_accuracy.png`` into ``out``
    (default: ``<run>/certify-sigma<σ>``). ``sigma`` defaults to the noise level the run trained with.
    """
    from tailwise.certify import Smooth, average_certified_radius, certified_accuracy, max_certifiable_radius
    from tailwise.train.checkpoint import load_checkpoint
    from tailwise.train.config import config_from_dict
    from tailwise.train.trainer import Trainer

    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no config.json in run folder {run}")
    cfg = config_from_dict(json.loads(cfg_path.read_text(encoding="utf-8")))
    if sigma is None:
        sigma = cfg.loss.params.get("sigma")
        if sigma is None:
            raise ValueError(f"the run's loss {cfg.loss.name!r} has no sigma; pass --sigma")
    cfg.train.progress = False
    trainer = Trainer(cfg, run_dir=run, log=None)
    trainer.model.load_state_dict(load_checkpoint(run / f"{checkpoint}.pt")["model"])
    model = torch.nn.Sequential(_Preprocess(trainer), trainer.model).eval()
    smooth = Smooth(model, trainer.num_classes, float(sigma))
    test = trainer.data.test
    count = min(int(num_images), len(test))
    if count < 1:
        raise ValueError(f"num_images must be >= 1; got {num_images}")
    picks = torch.linspace(0, len(test) - 1, count).round().long().unique()
    gen = torch.Generator(device=trainer.device).manual_seed(seed)
    rows = []
    with torch.no_grad():
        for i in picks.tolist():
            x = test.x[i].to(trainer.device)
            t = time.perf_counter()
            pred, radius = smooth.certify(x, n0, n, alpha, batch_size, generator=gen)
            label = int(test.y[i])
            rows.append({"idx": i, "label": label, "predict": int(pred), "radius": float(radius),
                         "correct": int(pred == label), "seconds": time.perf_counter() - t})
    preds = [r["predict"] for r in rows]
    labels = [r["label"] for r in rows]
    radii = [r["radius"] for r in rows]
    r_max = max_certifiable_radius(n, alpha, float(sigma))
    acc = certified_accuracy(radii, preds, labels, at=[r for r in RADII if r <= r_max])
    result = {
        "run": str(run), "checkpoint": checkpoint, "sigma": float(sigma), "n0": n0, "n": n, "alpha": alpha,
        "num_images": len(rows), "max_certifiable_radius": r_max,
        "certified_accuracy": {f"{r:g}": float(a) for r, a in zip([r for r in RADII if r <= r_max], acc)},
        "average_certified_radius": average_certified_radius(radii, preds, labels),
        "seconds_per_image": sum(r["seconds"] for r in rows) / len(rows),
    }
    out = out or run / f"certify-sigma{sigma:g}"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "certify.tsv", "w", encoding="utf-8") as fh:
        fh.write("idx\tlabel\tpredict\tradius\tcorrect\tseconds\n")
        for r in rows:
            fh.write(f"{r['idx']}\t{r['label']}\t{r['predict']}\t{r['radius']:.4f}\t{r['correct']}\t{r['seconds']:.3f}\n")
    (out / "certify.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    header = "| radius | " + " | ".join(result["certified_accuracy"]) + " | ACR |\n"
    header += "|---|" + "---:|" * (len(result["certified_accuracy"]) + 1) + "\n"
    line = "| certified accuracy | " + " | ".join(f"{100 * v:.1f}" for v in result["certified_accuracy"].values())
    line += f" | {result['average_certified_radius']:.3f} |\n"
    (out / "certify.md").write_text(
        f"# Certification of {run} (sigma {sigma:g}, n0 {n0}, n {n}, alpha {alpha}, {len(rows)} test images)\n\n"
        + header + line, encoding="utf-8")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from tailwise.certify import plot_certified_accuracy

        ax = plot_certified_accuracy(radii, preds, labels, label=f"sigma {sigma:g}")
        ax.set_xlabel("l2 radius")
        ax.set_ylabel("certified accuracy")
        ax.figure.savefig(out / "certified_accuracy.png", dpi=120)
        plt.close(ax.figure)
    except ImportError:
        pass
    result["out"] = str(out)
    result["table"] = header + line
    return result


class _Preprocess(torch.nn.Module):
    """The run's evaluation preprocessing (scaling to [0, 1], and normalisation when the run used it)."""

    def __init__(self, trainer: Any) -> None:
        super().__init__()
        self.augment = trainer.augment

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.augment(x, train=False)
