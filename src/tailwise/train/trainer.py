"""The tailwise trainer: composes data, model, loss and stateful components from a :class:`RunConfig`.

One process or many under ``torchrun`` (DDP, gloo on CPU and nccl on GPU). The training data stays
resident on the device and is batched and augmented there. Every epoch the trainer

1. calls ``set_epoch(epoch)`` on the loss, the weight schedule, the sampler and the batch transform, and
   hands the schedule's class weights to the loss (``loss.set_weight``);
2. trains on the sampler's indices (a global batch of ``train.batch_size`` split over the ranks),
   calling ``on_train_step(epoch, step, steps_per_epoch, optimizer, model)`` before every step on the
   components that have it (per-minibatch schedules such as the l_inf-dist net's p, eps and lambda);
3. evaluates on the validation split, gathers the logits from all ranks, calls
   ``update_from_validation(logits, target, epoch)`` on the components that have it, and keeps the
   best-on-validation weights;
4. writes one JSONL record and an atomic checkpoint holding everything needed to resume exactly.

At the end it evaluates the last and the best-on-validation weights on the test split. The test split
is never used for selection.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tailwise._validation import validation_disabled
from tailwise.registry import BATCH_TRANSFORMS, LOSSES, MODELS, SAMPLERS, WEIGHT_SCHEDULES
from tailwise.samplers.shuffle import epoch_generator
from tailwise.train.checkpoint import load_checkpoint, save_checkpoint
from tailwise.train.config import ConfigError, RunConfig, config_to_dict
from tailwise.train.distributed import DistInfo, all_gather_tensor, init_distributed
from tailwise.train.lr_schedule import lr_factor

__all__ = ["Trainer", "auto_model_name", "load_components", "resolve_device"]

_HOOKED = ("loss", "weights", "sampler", "transform")


def load_components() -> None:
    """Import every component package so that its registry entries exist."""
    import importlib

    for package in ("losses", "models", "samplers", "schedules", "transforms", "optim", "features", "certify"):
        importlib.import_module(f"tailwise.{package}")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when available (the local rank's GPU under torchrun), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"train.device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {name!r}") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device is {name!r} but CUDA is not available on this machine")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def _compile_backend(setting: bool | str) -> str | None:
    """The ``torch.compile`` backend named by ``train.compile`` (``None`` when off)."""
    if setting is False:
        return None
    if setting is True:
        return "inductor"
    backends = torch.compiler.list_backends(exclude_tags=())
    if setting not in backends:
        raise ConfigError(f"train.compile must be true, false or one of {backends}; got {setting!r}")
    return setting


def auto_model_name(input_shape: tuple[int, ...]) -> str:
    """The reference model for an input shape: ResNet-32 for 3x32x32, the small CNN for 1x28x28, the
    1-D CNN for (C, L) signals, and the MLP otherwise."""
    if len(input_shape) == 2:
        return "cnn1d"
    if tuple(input_shape) == (3, 32, 32):
        return "resnet32"
    if len(input_shape) == 3 and tuple(input_shape[1:]) == (28, 28):
        return "small_cnn"
    return "mlp"


def _state_of(component: Any) -> dict[str, Any] | None:
    fn = getattr(component, "state_dict", None)
    return fn() if callable(fn) else None


class Trainer:
    """Train one :class:`RunConfig`.

    Args:
        cfg: the run configuration.
        run_dir: output folder (``train.output_dir / run_name`` when omitted).
        resume: a checkpoint path, or ``"auto"`` to continue from ``run_dir/last.pt`` when it exists.
        data: a prepared :class:`tailwise.data.DataBundle` to use instead of building it from ``cfg.data``
            (several runs on one dataset build it once).
        log: where progress lines go (rank 0 only); ``None`` silences them.
    """

    def __init__(
        self,
        cfg: RunConfig,
        *,
        run_dir: str | Path | None = None,
        resume: str | Path | None = None,
        data: Any = None,
        log: Callable[[str], None] | None = print,
    ) -> None:
        self.cfg = cfg
        tc = cfg.train
        if tc.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1; got {tc.epochs}")
        if tc.batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1; got {tc.batch_size}")
        if tc.nan_policy not in ("error", "skip"):
            raise ConfigError(f"train.nan_policy must be 'error' or 'skip'; got {tc.nan_policy!r}")
        if tc.select_metric not in ("accuracy", "balanced_accuracy"):
            raise ConfigError(f"train.select_metric must be 'accuracy' or 'balanced_accuracy'; got {tc.select_metric!r}")
        if tc.grad_clip_norm is not None and not tc.grad_clip_norm > 0:
            raise ConfigError(f"train.grad_clip_norm must be > 0 or null; got {tc.grad_clip_norm}")
        self._compile_backend = _compile_backend(tc.compile)
        if tc.threads:
            torch.set_num_threads(tc.threads)
        self.device = resolve_device(tc.device)
        self.dist: DistInfo = init_distributed(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        if tc.batch_size % self.dist.world_size:
            raise ConfigError(
                f"train.batch_size must be divisible by the number of processes ({self.dist.world_size}); got {tc.batch_size}"
            )
        self._log = log if self.dist.is_main else None
        name = tc.run_name or f"{cfg.recipe or 'run'}-{cfg.data.name}-seed{tc.seed}"
        self.run_dir = Path(run_dir) if run_dir is not None else Path(tc.output_dir) / name
        torch.manual_seed(tc.seed)
        self._build(data)
        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"metric": -math.inf, "epoch": -1}
        if resume is not None:
            path = self.run_dir / "last.pt" if str(resume) == "auto" else Path(resume)
            if path.is_file():
                self._restore(load_checkpoint(path, map_location="cpu"))
            elif str(resume) != "auto":
                raise FileNotFoundError(f"checkpoint file not found: {path}")

    # ------------------------------------------------------------------ construction
    def log(self, text: str) -> None:
        if self._log is not None:
            self._log(text)

    def _build(self, data: Any = None) -> None:
        from tailwise.data import prepare_data
        from tailwise.metrics import ClassificationReport
        from tailwise.transforms.augment import BatchAugment

        load_components()
        cfg, dc = self.cfg, self.cfg.data
        self.data = data if data is not None else prepare_data(
            dc.name,
            data_dir=dc.data_dir,
            long_tail=dc.long_tail,
            noise=dc.noise,
            val_fraction=dc.val_fraction,
            val_per_class=dc.val_per_class,
            seed=dc.seed,
            **dc.options,
        )
        d = self.data
        self.num_classes = int(d.num_classes)
        self.class_counts = d.train.class_counts()
        dev = self.device
        self.train_x, self.train_y = d.train.x.to(dev), d.train.y.to(dev)
        augment = d.augment if dc.augment is None else dc.augment
        self.augment = BatchAugment(
            mean=d.mean if dc.normalize else None, std=d.std if dc.normalize else None,
            padding=4 if augment else 0, flip=augment,
        ).to(dev)
        self._report_cls = ClassificationReport

        mc = cfg.model
        model_name = auto_model_name(tuple(d.input_shape)) if mc.name == "auto" else mc.name
        self.model_name = model_name
        model: nn.Module = MODELS.build(
            model_name, mc.params, num_classes=self.num_classes, in_channels=int(d.input_shape[0]),
            input_shape=tuple(d.input_shape), input_dim=int(torch.tensor(d.input_shape).prod()),
            input_size=tuple(d.input_shape[1:]) if len(d.input_shape) == 3 else None,
        )
        model = model.to(dev)
        if cfg.train.channels_last and dev.type == "cuda" and len(d.input_shape) == 3:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp_model: nn.Module = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        else:
            self.ddp_model = model

        ctx = {"class_counts": self.class_counts, "num_classes": self.num_classes}
        self.transform = None if cfg.transform.name == "none" else BATCH_TRANSFORMS.build(cfg.transform.name, cfg.transform.params, **ctx)
        if self.transform is not None and hasattr(self.transform, "to"):
            self.transform = self.transform.to(dev)
        loss_params = dict(cfg.loss.params)
        if self.transform is not None and "reduction" in LOSSES.parameters(cfg.loss.name):
            loss_params.setdefault("reduction", "none")
        self.loss = LOSSES.build(cfg.loss.name, loss_params, **ctx)
        if isinstance(self.loss, nn.Module):
            self.loss = self.loss.to(dev)
        self.loss_needs_model = bool(getattr(self.loss, "needs_model", False))
        if getattr(self.loss, "needs_worst", False):
            raise ConfigError(
                f"loss {cfg.loss.name!r} needs worst-case margins from an l_inf-dist model; train it with "
                "tailwise.losses.linf_schedule in your own loop (the trainer does not drive that schedule yet)"
            )
        if self.loss_needs_model and self.transform is not None:
            raise ConfigError(f"loss {cfg.loss.name!r} draws its own noise and cannot be combined with transform {cfg.transform.name!r}")
        self.weights = None if cfg.weights.name == "none" else WEIGHT_SCHEDULES.build(cfg.weights.name, cfg.weights.params, **ctx)
        if self.weights is not None and not hasattr(self.loss, "set_weight"):
            raise ConfigError(f"loss {cfg.loss.name!r} takes no class weights, so weights={cfg.weights.name!r} cannot be used with it")
        self.sampler = SAMPLERS.build(
            cfg.sampler.name, cfg.sampler.params, labels=d.train.y, class_counts=self.class_counts,
            num_replicas=self.dist.world_size, rank=self.dist.rank, seed=cfg.train.seed,
        )

        oc = cfg.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        if isinstance(self.loss, nn.Module):
            params += [p for p in self.loss.parameters() if p.requires_grad]
        if oc.name == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=oc.lr, momentum=oc.momentum, weight_decay=oc.weight_decay, nesterov=oc.nesterov
            )
        elif oc.name in ("adam", "adamw"):
            cls = torch.optim.Adam if oc.name == "adam" else torch.optim.AdamW
            self.optimizer = cls(params, lr=oc.lr, betas=tuple(oc.betas), weight_decay=oc.weight_decay)  # type: ignore[arg-type]
        else:
            raise ConfigError(f"optim.name must be one of ['sgd', 'adam', 'adamw']; got {oc.name!r}")
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", oc.lr)

        self.susceptibility = None
        if cfg.train.susceptibility is not None:
            from tailwise.metrics import SusceptibilityTracker

            opts = dict(cfg.train.susceptibility)
            valid = ("batch_size", "aggregation", "train_mode", "use_optimizer_state")
            unknown = [k for k in opts if k not in valid]
            if unknown:
                raise ConfigError(f"unknown key(s) {unknown} in train.susceptibility; valid keys: {list(valid)}")
            self.susceptibility = SusceptibilityTracker(self.num_classes, **opts)

        self.use_amp = bool(cfg.train.amp) and dev.type == "cuda"
        amp_dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16}
        if cfg.train.amp_dtype not in amp_dtypes:
            raise ConfigError(f"train.amp_dtype must be one of {list(amp_dtypes)}; got {cfg.train.amp_dtype!r}")
        self.amp_dtype = amp_dtypes[cfg.train.amp_dtype]
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self._forward_loss = self._forward_and_loss
        if self._compile_backend is not None:
            self._forward_loss = torch.compile(self._forward_and_loss, backend=self._compile_backend)

    def components(self) -> dict[str, Any]:
        """The stateful components by role (``None`` where absent)."""
        return {"loss": self.loss, "weights": self.weights, "sampler": self.sampler, "transform": self.transform,
                "susceptibility": self.susceptibility}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly."""
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "components": {k: _state_of(v) for k, v in self.components().items() if v is not None},
            "rng": rng,
            "best": dict(self.best),
            "history": list(self.history),
            "config": config_to_dict(self.cfg),
            "world_size": self.dist.world_size,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        for key, comp_state in state.get("components", {}).items():
            comp = self.components().get(key)
            if comp is not None and comp_state is not None:
                comp.load_state_dict(comp_state)
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.best = dict(state["best"])
        self.history = list(state["history"])
        self.start_epoch = int(state["epoch"]) + 1
        self.log(f"resumed from epoch {state['epoch']} ({self.run_dir})")

    # ------------------------------------------------------------------ loop pieces
    def _autocast(self) -> Any:
        if self.use_amp:
            return torch.autocast(device_type="cuda", dtype=self.amp_dtype)
        return nullcontext()

    def _set_epoch(self, epoch: int) -> None:
        for comp in self.components().values():
            if comp is not None and hasattr(comp, "set_epoch"):
                comp.set_epoch(epoch)
        if self.weights is not None:
            w = self.weights.weight(epoch)
            self.loss.set_weight(None if w is None else w.to(self.device))
        factor = lr_factor(
            epoch, epochs=self.cfg.train.epochs, name=self.cfg.schedule.name,
            warmup_epochs=self.cfg.schedule.warmup_epochs, milestones=self.cfg.schedule.milestones,
            gamma=self.cfg.schedule.gamma, min_factor=self.cfg.schedule.min_lr / max(self.cfg.optim.lr, 1e-30),
        )
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def _sampler_indices(self) -> Tensor:
        fn = getattr(self.sampler, "indices", None)
        idx = fn() if callable(fn) else torch.tensor(list(iter(self.sampler)), dtype=torch.int64)
        return idx.to(torch.int64)

    def _compute_loss(self, logits: Tensor, batch: tuple[Tensor, ...]) -> Tensor:
        if len(batch) == 4:
            _, y_a, y_b, lam = batch
            per_a, per_b = self.loss(logits, y_a), self.loss(logits, y_b)
            lam = lam.to(per_a.dtype)
            return (lam * per_a + (1 - lam) * per_b).mean()
        value = self.loss(logits, batch[1])
        return value.mean() if value.ndim else value

    def _forward_and_loss(self, x: Tensor, *rest: Tensor) -> tuple[Tensor, Tensor]:
        """The logits of a training batch and its loss (compiled with ``train.compile``)."""
        logits = self.ddp_model(x)
        return logits, self._compute_loss(logits, (x, *rest))

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over this rank's sampler indices; returns the mean loss and accuracy over all ranks."""
        self.ddp_model.train()
        dev = self.device
        idx = self._sampler_indices()
        local_bs = self.cfg.train.batch_size // self.dist.world_size
        gen = torch.Generator(device=dev)
        gen.manual_seed(int(epoch_generator(self.cfg.train.seed, epoch, stream=1 + self.dist.rank).initial_seed()))
        # labels were validated when the data was built: skip the per-batch value checks (device syncs) and
        # let the finite-loss guard below catch NaN/Inf
        totals = torch.zeros(4, dtype=torch.float64, device=dev)  # loss sum, correct, count, skipped
        end = idx.numel() - idx.numel() % local_bs if self.cfg.train.drop_last else idx.numel()
        steps = range(0, end, local_bs)
        step_hooks = [c for c in self.components().values() if c is not None and hasattr(c, "on_train_step")]
        bar = self._progress(steps, epoch)
        for start in bar:
            for comp in step_hooks:
                comp.on_train_step(epoch, start // local_bs, len(steps), self.optimizer, self.model)
            b = idx[start : start + local_bs].to(dev, non_blocking=True)
            x = self.augment(self.train_x[b], generator=gen, train=True)
            if self.cfg.train.channels_last and x.ndim == 4 and dev.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            batch: tuple[Tensor, ...] = (x, self.train_y[b])
            if self.transform is not None:
                batch = tuple(self.transform(x, batch[1], generator=gen))
            with self._autocast(), validation_disabled():
                if self.loss_needs_model:
                    # objectives that query the model themselves (Gaussian augmentation, SmoothMix)
                    logits, loss = None, self.loss(self.ddp_model, batch[0], batch[1], generator=gen)
                else:
                    logits, loss = self._forward_loss(*batch)
            if not bool(torch.isfinite(loss.detach())):
                if self.cfg.train.nan_policy == "error":
                    raise FloatingPointError(
                        f"loss is {float(loss.detach())} at epoch {epoch}, batch {start // local_bs}; the step was not applied "
                        f"and the last checkpoint ({self.run_dir / 'last.pt'}) is intact"
                    )
                totals[3] += 1
                self.optimizer.zero_grad(set_to_none=True)
                continue
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.cfg.train.grad_clip_norm is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            n = batch[1].shape[0]
            totals[0] += loss.detach().double() * n
            if logits is not None:
                totals[1] += (logits.detach().argmax(1) == batch[1]).sum()
            totals[2] += n
        if self.dist.enabled:
            torch.distributed.all_reduce(totals)
        count = max(float(totals[2]), 1.0)
        accuracy = math.nan if self.loss_needs_model else float(totals[1]) / count
        return {"train_loss": float(totals[0]) / count, "train_accuracy": accuracy,
                "skipped_steps": int(totals[3])}

    def _probe_susceptibility(self, epoch: int) -> dict[str, float]:
        """Susceptibility probe at the start of the epoch (official order), on a fresh training batch."""
        if self.susceptibility is None:
            return {}
        gen = torch.Generator(device=self.device)
        gen.manual_seed(int(epoch_generator(self.cfg.train.seed, epoch, stream=10_007).initial_seed()))
        n = self.train_x.shape[0]
        idx = torch.randperm(n, generator=gen, device=self.device)[: self.susceptibility.batch_size]
        x = self.augment(self.train_x[idx], generator=gen, train=True)
        r = self.susceptibility.step(self.model, self.optimizer, x, generator=gen)
        return {"susceptibility_r": float(r), "zeta": self.susceptibility.current()}

    def _progress(self, steps: range, epoch: int) -> Any:
        if not (self.cfg.train.progress and self.dist.is_main and sys.stderr.isatty()):
            return steps
        try:
            from tqdm import tqdm
        except ImportError:
            return steps
        return tqdm(steps, desc=f"epoch {epoch}", leave=False, unit="batch")

    @torch.no_grad()
    def predict(self, x: Tensor, model: nn.Module | None = None) -> Tensor:
        """Logits for all of ``x`` (sharded over ranks and gathered back in order)."""
        model = model or self.model
        model.eval()
        n = x.shape[0]
        order = torch.arange(self.dist.rank, n, self.dist.world_size)
        outs = []
        bs = self.cfg.train.eval_batch_size
        for start in range(0, order.numel(), bs):
            b = order[start : start + bs]
            xb = self.augment(x[b].to(self.device), train=False)
            with self._autocast():
                outs.append(model(xb).float())
        local = torch.cat(outs) if outs else torch.zeros(0, self.num_classes, device=self.device)
        if not self.dist.enabled:
            return local
        logits = all_gather_tensor(local)
        positions = all_gather_tensor(order.to(self.device))
        out = torch.empty_like(logits)
        out[positions] = logits
        return out

    def evaluate(self, split: str = "val", model: nn.Module | None = None) -> tuple[dict[str, Any], Tensor]:
        """Metrics (overall, balanced, per-class, many/medium/few) and logits on ``val`` or ``test``."""
        ds = getattr(self.data, split)
        logits = self.predict(ds.x, model)
        report = self._report_cls(self.num_classes, self.class_counts)
        report.update(logits.cpu(), ds.y.cpu())
        return report.compute(), logits

    # ------------------------------------------------------------------ main loop
    def fit(self) -> dict[str, Any]:
        """Train from ``start_epoch`` to the end, then evaluate on test; returns the summary."""
        tc = self.cfg.train
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._write_json("config.json", config_to_dict(self.cfg))
            self._write_json("data.json", self.data.info)
            self._rewrite_metrics()
        t_start = time.perf_counter()
        for epoch in range(self.start_epoch, tc.epochs):
            self.epoch = epoch
            t0 = time.perf_counter()
            self._set_epoch(epoch)
            probe = self._probe_susceptibility(epoch)
            train_stats = self.train_epoch(epoch)
            train_time = time.perf_counter() - t0
            val_metrics, val_logits = self.evaluate("val")
            for comp in self.components().values():
                if comp is not None and hasattr(comp, "update_from_validation"):
                    comp.update_from_validation(val_logits, self.data.val.y.to(val_logits.device), epoch)
            score = float(val_metrics[tc.select_metric])
            if score > self.best["metric"]:
                self.best = {"metric": score, "epoch": epoch}
                if self.dist.is_main:
                    save_checkpoint({"epoch": epoch, "model": self.model.state_dict()}, self.run_dir / "best.pt")
            record = {
                "epoch": epoch,
                "lr": self.optimizer.param_groups[0]["lr"],
                **train_stats,
                **probe,
                **{f"val_{k}": v for k, v in val_metrics.items() if not isinstance(v, list)},
                "epoch_time": time.perf_counter() - t0,
                "train_time": train_time,
            }
            self.history.append(record)
            if self.dist.is_main:
                with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
                save_checkpoint(self.state_dict(), self.run_dir / "last.pt")
            self.log(
                f"epoch {epoch:3d}  lr {record['lr']:.2e}  loss {record['train_loss']:.4f}  "
                f"train acc {record['train_accuracy']:.4f}  val acc {val_metrics['accuracy']:.4f}  "
                f"val bal {val_metrics['balanced_accuracy']:.4f}  {record['epoch_time']:.1f}s"
            )
        return self.finish(time.perf_counter() - t_start)

    def finish(self, elapsed: float = 0.0) -> dict[str, Any]:
        """Evaluate the last and best-on-validation weights on test; write ``summary.json`` and plots."""
        last_metrics, _ = self.evaluate("test")
        best_metrics = last_metrics
        best_path = self.run_dir / "best.pt"
        if self.dist.enabled:
            torch.distributed.barrier()
        if best_path.is_file() and self.best["epoch"] != self.epoch_last():
            best_model = MODELS.build(
                self.model_name, self.cfg.model.params, num_classes=self.num_classes,
                in_channels=int(self.data.input_shape[0]), input_shape=tuple(self.data.input_shape),
                input_dim=int(torch.tensor(self.data.input_shape).prod()),
                input_size=tuple(self.data.input_shape[1:]) if len(self.data.input_shape) == 3 else None,
            ).to(self.device)
            best_model.load_state_dict(load_checkpoint(best_path)["model"])
            best_metrics, _ = self.evaluate("test", best_model)
        summary = {
            "recipe": self.cfg.recipe,
            "dataset": self.cfg.data.name,
            "model": self.model_name,
            "epochs": self.cfg.train.epochs,
            "seed": self.cfg.train.seed,
            "world_size": self.dist.world_size,
            "select_metric": self.cfg.train.select_metric,
            "best_epoch": self.best["epoch"],
            "best_val_metric": self.best["metric"],
            "test_last": last_metrics,
            "test_best": best_metrics,
            "train_seconds": elapsed,
            "class_counts": self.class_counts.tolist(),
        }
        if self.dist.is_main:
            self._write_json("summary.json", summary)
            if self.cfg.train.plots:
                self._plot(best_metrics)
        return summary

    def close(self) -> None:
        """Drop the ``DistributedDataParallel`` wrapper (its reducer holds the process group).

        Call before :func:`~tailwise.train.distributed.shutdown_distributed` so the group is released
        when it is destroyed, not later at interpreter exit. The trainer stays usable on one process:
        :meth:`evaluate` and :meth:`predict` run the plain model. Idempotent.
        """
        self.ddp_model = self.model

    def epoch_last(self) -> int:
        return self.history[-1]["epoch"] if self.history else -1

    # ------------------------------------------------------------------ files
    def _write_json(self, name: str, payload: Any) -> None:
        tmp = self.run_dir / f".{name}.tmp"
        tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
        tmp.replace(self.run_dir / name)

    def _rewrite_metrics(self) -> None:
        lines = "".join(json.dumps(r) + "\n" for r in self.history)
        (self.run_dir / "metrics.jsonl").write_text(lines, encoding="utf-8")

    def _plot(self, metrics: dict[str, Any]) -> None:
        try:
            from tailwise.report.plots import plot_per_class_accuracy
        except ImportError:  # matplotlib missing: plots are optional
            return
        plot_per_class_accuracy(
            self.class_counts.tolist(), metrics["per_class_accuracy"], self.run_dir / "plots" / "per_class_accuracy.png",
            title=f"{self.cfg.recipe or 'run'} on {self.cfg.data.name}",
        )
