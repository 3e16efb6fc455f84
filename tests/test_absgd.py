"""ABSGD: per-sample DRO weighting with a moving normaliser, two-stage schedule, DDP sync."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from tailwise.optim import ABSGD, ABSGDLoss, absgd_weights
from tailwise.registry import LOSSES
from tailwise.train.distributed import shutdown_distributed

COUNTS = [500, 200, 80, 30, 10]


def _batch(n: int = 12, c: int = 5, seed: int = 0, scale: float = 1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, c, generator=g, dtype=dtype), torch.randint(0, c, (n,), generator=g)


def _reference(steps, lam, gamma, alpha, weight=None):
    """A slow loop over the official formulas with plain exponentials."""
    u, out = 0.0, []
    for logits, target in steps:
        losses = [float(F.cross_entropy(logits[i : i + 1], target[i : i + 1])) for i in range(len(target))]
        if weight is not None:
            losses = [w * l for w, l in zip(weight[target].tolist(), losses)]
        e = [math.exp(l / lam) for l in losses]
        u = (1 - gamma) * u + gamma * alpha * sum(e) / len(e)
        p = [ei / (u * len(e)) for ei in e]
        out.append((sum(pi * li for pi, li in zip(p, losses)), u, p))
    return out


@pytest.mark.parametrize("mode", ["stable", "official"])
def test_matches_loop_reference(mode: str) -> None:
    steps = [_batch(seed=s) for s in range(4)]
    weight = torch.tensor([0.2, 0.5, 1.0, 1.5, 1.8], dtype=torch.float64)
    crit = ABSGDLoss("ce", lam=2.0, gamma=0.7, alpha=0.5, mode=mode, weight=weight)
    for (logits, target), (loss_ref, u_ref, p_ref) in zip(steps, _reference(steps, 2.0, 0.7, 0.5, weight)):
        loss = crit(logits, target)
        assert math.isclose(float(loss), loss_ref, rel_tol=1e-12)
        assert math.isclose(float(crit.u), u_ref, rel_tol=1e-12)
        torch.testing.assert_close(crit.last_weights, torch.tensor(p_ref, dtype=torch.float64))


def test_first_step_scaling_and_first_batch_fix() -> None:
    logits, target = _batch()
    crit = ABSGDLoss("ce", lam=3.0, gamma=0.7, alpha=0.5)
    crit(logits, target)
    assert math.isclose(float(crit.last_weights.sum()), 1 / (0.7 * 0.5), rel_tol=1e-12)
    fixed = ABSGDLoss("ce", lam=3.0, gamma=0.7, alpha=0.5, u_init="first_batch")
    fixed(logits, target)
    assert math.isclose(float(fixed.last_weights.sum()), 1 / 0.5, rel_tol=1e-12)
    fixed(logits, target)  # u_0 is only replaced while u is still 0
    assert math.isclose(float(fixed.last_weights.sum()), 1 / 0.5, rel_tol=1e-12)


def test_large_lambda_is_plain_mean_cross_entropy() -> None:
    logits, target = _batch()
    ce = F.cross_entropy(logits, target)
    crit = ABSGDLoss("ce", lam=1e12, gamma=1.0, alpha=1.0, plain_lambda_threshold=None)
    for _ in range(2):
        torch.testing.assert_close(crit(logits, target), ce)
    torch.testing.assert_close(ABSGDLoss("ce", lam=math.inf)(logits, target), ce)
    official_rule = ABSGDLoss("ce", lam=200.0)
    torch.testing.assert_close(official_rule(logits, target), ce)
    assert float(official_rule.u) == 0.0 and official_rule.last_weights is None


def test_stable_mode_does_not_overflow() -> None:
    logits, target = _batch(scale=60.0, dtype=torch.float32)  # CE up to ~hundreds; exp(l/0.5) overflows float32
    official = ABSGDLoss("ce", lam=0.5, gamma=0.9, mode="official")
    stable = ABSGDLoss("ce", lam=0.5, gamma=0.9)
    with torch.no_grad():
        bad = official(logits, target)
    assert not torch.isfinite(bad)
    for _ in range(3):
        good = stable(logits, target)
        assert torch.isfinite(good) and torch.isfinite(stable.log_u)
        assert torch.isfinite(stable.last_weights).all()
    assert math.isclose(float(stable.last_weights.sum()), 1.0, rel_tol=1e-2)  # sum p -> 1/alpha at steady state


def test_weights_function_log_space_equals_plain() -> None:
    losses = torch.rand(10, dtype=torch.float64) * 4
    p_log, log_u = absgd_weights(losses, math.log(0.8), 2.0, 0.3, 0.7)
    p, u = absgd_weights(losses, 0.8, 2.0, 0.3, 0.7, log_space=False)
    torch.testing.assert_close(p_log, p)
    torch.testing.assert_close(log_u.exp(), u)
    p0, _ = absgd_weights(losses, -math.inf, 2.0, 0.3, 0.7)  # u_0 = 0
    assert math.isclose(float(p0.sum()), 1 / (0.3 * 0.7), rel_tol=1e-12)


def test_module_equals_functional() -> None:
    logits, target = _batch()
    crit = ABSGDLoss("ce", lam=2.5, gamma=0.4, alpha=0.8)
    crit(logits, target)  # advance the state once
    log_u_prev = crit.log_u.clone()
    logits2, target2 = _batch(seed=1)
    loss = crit(logits2, target2)
    per = F.cross_entropy(logits2, target2, reduction="none")
    p, log_u = absgd_weights(per, log_u_prev, 2.5, 0.4, 0.8)
    torch.testing.assert_close(loss, (p * per).sum())
    torch.testing.assert_close(crit.log_u, log_u)


def test_negative_lambda_downweights_high_loss() -> None:
    logits, target = _batch(n=32)
    crit = ABSGDLoss("ce", lam=-1.0)
    crit(logits, target)
    per = F.cross_entropy(logits, target, reduction="none")
    p = crit.last_weights
    assert float(p[per.argmax()]) == float(p.min()) and float(p[per.argmin()]) == float(p.max())


def test_gradient_is_detached_weighted_sum() -> None:
    logits, target = _batch()
    weight = torch.tensor([0.5, 1.0, 1.5, 2.0, 3.0], dtype=torch.float64)
    crit = ABSGDLoss("ce", lam=2.0, gamma=0.5, weight=weight)
    x = logits.clone().requires_grad_(True)
    loss = crit(x, target)
    (grad,) = torch.autograd.grad(loss, x)
    p = crit.last_weights
    expected = (p * weight[target]).unsqueeze(1) * (torch.softmax(logits, 1) - F.one_hot(target, 5).double())
    torch.testing.assert_close(grad, expected)


def test_gradcheck_plain_stage_and_fixed_state() -> None:
    logits, target = _batch(n=5, c=4)
    x = logits.clone().requires_grad_(True)
    plain = ABSGDLoss("ce", lam=5.0, start_epoch=3)
    assert torch.autograd.gradcheck(lambda z: plain(z, target), (x,))

    crit = ABSGDLoss("ce", lam=2.0)
    crit(logits, target)
    p = crit.last_weights.clone()
    # with p held fixed the objective is sum_i p_i l_i(z), whose gradient autograd must get right
    assert torch.autograd.gradcheck(lambda z: (p * crit.per_sample_loss(z, target)).sum(), (x,))


def test_two_stage_schedule_and_state_dict() -> None:
    logits, target = _batch()
    crit = ABSGDLoss("ce", lam=2.0, gamma=0.5, start_epoch=2)
    crit.set_epoch(1)
    torch.testing.assert_close(crit(logits, target), F.cross_entropy(logits, target))
    assert float(crit.u) == 0.0
    crit.set_epoch(2)
    crit(logits, target)
    assert float(crit.u) > 0
    other = ABSGDLoss("ce", lam=2.0, gamma=0.5, start_epoch=2)
    other.load_state_dict(crit.state_dict())
    assert other.epoch == 2
    torch.testing.assert_close(other.log_u, crit.log_u)
    logits2, target2 = _batch(seed=5)
    torch.testing.assert_close(other(logits2, target2), crit(logits2, target2))
    # a non-plain first stage (official init_lamda < 200)
    warm = ABSGDLoss("ce", lam=2.0, start_epoch=1, first_stage_lam=10.0)
    warm(logits, target)
    assert float(warm.u) > 0


def test_set_weight_multiplies_per_sample_losses() -> None:
    logits, target = _batch()
    crit = ABSGDLoss("ce", lam=200.0, num_classes=5)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    crit.set_weight(w)
    per = F.cross_entropy(logits, target, reduction="none")
    torch.testing.assert_close(crit(logits, target), (w[target] * per).mean())  # not divided by sum w
    crit.set_weight(None)
    torch.testing.assert_close(crit(logits, target), per.mean())


def test_registry_builds_ldam_base() -> None:
    crit = LOSSES.build("absgd", {"base": "ldam", "lam": 20.0, "base_params": {"max_margin": 0.5, "scale": 30.0}},
                        class_counts=COUNTS, num_classes=5)
    assert isinstance(crit, ABSGDLoss)
    logits, target = _batch()
    from tailwise.functional import ldam_loss

    per = ldam_loss(logits, target, COUNTS, max_margin=0.5, scale=30.0, reduction="none")
    torch.testing.assert_close(crit.per_sample_loss(logits, target), per)
    assert torch.isfinite(crit(logits, target))


def test_callable_base_and_optimizer() -> None:
    model = torch.nn.Linear(3, 5)
    opt = ABSGD(model.parameters(), lr=0.1)
    assert opt.param_groups[0]["momentum"] == 0.9
    crit = ABSGDLoss(lambda z, y: F.cross_entropy(z, y, reduction="none"), lam=1.0)
    x, y = torch.randn(8, 3), torch.randint(0, 5, (8,))
    loss = crit(model(x), y)
    loss.backward()
    opt.step()


def test_bad_inputs() -> None:
    logits, target = _batch()
    with pytest.raises(ValueError, match="lam must be a non-zero number"):
        ABSGDLoss("ce", lam=0.0)
    with pytest.raises(ValueError, match=r"gamma must lie in \(0, 1\]"):
        ABSGDLoss("ce", gamma=1.5)
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        ABSGDLoss("ce", alpha=0.0)
    with pytest.raises(ValueError, match="sync must be one of"):
        ABSGDLoss("ce", sync="ring")
    with pytest.raises(ValueError, match="mode must be one of"):
        ABSGDLoss("ce", mode="fast")
    with pytest.raises(ValueError, match="unknown loss"):
        ABSGDLoss("nope")
    with pytest.raises(TypeError, match="base must be a per-sample loss callable"):
        ABSGDLoss(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="base must return per-sample losses"):
        ABSGDLoss(lambda z, y: F.cross_entropy(z, y))(logits, target)
    with pytest.raises(ValueError, match="logits must be finite"):
        ABSGDLoss("ce")(torch.full_like(logits, math.nan), target)
    with pytest.raises(ValueError, match="per_sample_loss must be a 1-D tensor"):
        absgd_weights(torch.ones(2, 2), 0.0, 1.0, 0.5, 1.0)


def _ddp_absgd_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {}
        for sync in ("global", "local"):
            crit = ABSGDLoss("ce", lam=2.0, gamma=0.6, alpha=0.5, sync=sync)
            losses = []
            for step in range(2):
                logits, target = _batch(n=8, seed=100 * step + rank)
                losses.append(crit(logits, target))
            results[sync] = {"u": crit.u.clone(), "loss": torch.stack(losses)}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        shutdown_distributed()


def test_ddp_global_sync_two_processes(tmp_path: Path) -> None:
    world = 2
    mp.spawn(_ddp_absgd_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(world))
    torch.testing.assert_close(r0["global"]["u"], r1["global"]["u"])  # identical state on both ranks
    assert not torch.allclose(r0["local"]["u"], r1["local"]["u"])  # per-rank state when local
    # global sync + DDP gradient averaging == one process on the concatenated batch (DataParallel)
    single = ABSGDLoss("ce", lam=2.0, gamma=0.6, alpha=0.5)
    for step in range(2):
        parts = [_batch(n=8, seed=100 * step + r) for r in range(world)]
        full = single(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
        averaged = (r0["global"]["loss"][step] + r1["global"]["loss"][step]) / world
        torch.testing.assert_close(averaged, full)
    torch.testing.assert_close(single.u, r0["global"]["u"])


def test_eval_mode_leaves_state_alone() -> None:
    logits, target = _batch()
    crit = ABSGDLoss("ce", lam=2.0)
    crit(logits, target)
    u = crit.u.clone()
    crit.eval()
    torch.testing.assert_close(crit(logits, target), F.cross_entropy(logits, target))
    torch.testing.assert_close(crit.u, u)


def test_default_base_is_per_sample_cross_entropy_for_few_classes() -> None:
    # the default base loss uses the transposed log-softmax for float32 CPU logits with few classes
    from tailwise.optim.absgd import _ce_per_sample

    g = torch.Generator().manual_seed(14)
    z = torch.randn(64, 7, generator=g) * 3
    y = torch.randint(7, (64,), generator=g)
    a = z.clone().requires_grad_(True)
    b = z.clone().requires_grad_(True)
    out = _ce_per_sample(a, y)
    ref = F.cross_entropy(b, y, reduction="none")
    torch.testing.assert_close(out, ref)
    upstream = torch.rand(64, generator=g)
    out.backward(upstream)
    ref.backward(upstream)
    torch.testing.assert_close(a.grad, b.grad)


# ----------------------------------------------------------------------------- fused cross-entropy objective
@pytest.mark.parametrize("mode", ["stable", "official"])
@pytest.mark.parametrize("lam", [5.0, -5.0])
@pytest.mark.parametrize(("shape", "dtype"), [((64, 6), torch.float32), ((64, 40), torch.float32), ((64, 40), torch.float64)])
def test_fused_cross_entropy_equals_the_composition(shape: tuple[int, int], dtype: torch.dtype, lam: float, mode: str) -> None:
    # the default base runs the weighted sum in one function; a callable base computing the same
    # cross-entropy runs the composition: loss, gradient, weights and state agree step after step
    n, c = shape
    fused = ABSGDLoss("ce", lam=lam, gamma=0.5, alpha=0.7, mode=mode, num_classes=c)
    plain = ABSGDLoss(lambda z, y: F.cross_entropy(z, y, reduction="none"), lam=lam, gamma=0.5, alpha=0.7, mode=mode, num_classes=c)
    for step in range(3):
        logits, target = _batch(n, c, seed=step, scale=3.0, dtype=dtype)
        a = logits.clone().requires_grad_(True)
        b = logits.clone().requires_grad_(True)
        out = fused(a, target)
        assert type(out.grad_fn).__name__ == "_WeightedCrossEntropyBackward"
        ref = plain(b, target)
        assert type(ref.grad_fn).__name__ != "_WeightedCrossEntropyBackward"
        tol = {} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
        torch.testing.assert_close(out, ref, **tol)
        torch.testing.assert_close(fused.last_weights, plain.last_weights, **tol)
        torch.testing.assert_close(fused.log_u, plain.log_u, **tol)
        (out * 0.7).backward()
        (ref * 0.7).backward()
        torch.testing.assert_close(a.grad, b.grad, **tol)


def test_fused_path_only_without_class_weights_and_in_the_weighting_stage() -> None:
    logits, target = _batch()
    crit = ABSGDLoss("ce", lam=2.0, num_classes=5)
    assert type(crit(logits.clone().requires_grad_(True), target).grad_fn).__name__ == "_WeightedCrossEntropyBackward"
    crit.set_weight([1.0, 2.0, 1.0, 1.0, 1.0])
    assert type(crit(logits.clone().requires_grad_(True), target).grad_fn).__name__ != "_WeightedCrossEntropyBackward"
    with torch.no_grad():
        crit.weight.fill_(1.0)  # an in-place change back to ones is seen
    assert type(crit(logits.clone().requires_grad_(True), target).grad_fn).__name__ == "_WeightedCrossEntropyBackward"
    crit.eval()
    torch.testing.assert_close(crit(logits, target), F.cross_entropy(logits, target))
    plain_stage = ABSGDLoss("ce", lam=300.0, num_classes=5)  # at or above the threshold: the plain mean
    torch.testing.assert_close(plain_stage(logits, target), F.cross_entropy(logits, target))


def test_fused_double_backward() -> None:
    logits, target = _batch(n=10, c=6, scale=2.0)
    v = torch.randn(10, 6, dtype=torch.float64)
    crit = ABSGDLoss("ce", lam=2.0, num_classes=6)
    x = logits.clone().requires_grad_(True)
    loss = crit(x, target)
    (first,) = torch.autograd.grad(loss, x, create_graph=True)
    (second,) = torch.autograd.grad((first * v).sum(), x)
    p = crit.last_weights
    y = logits.clone().requires_grad_(True)
    ref = torch.dot(p, F.cross_entropy(y, target, reduction="none"))
    (first_ref,) = torch.autograd.grad(ref, y, create_graph=True)
    (second_ref,) = torch.autograd.grad((first_ref * v).sum(), y)
    torch.testing.assert_close(first, first_ref)
    torch.testing.assert_close(second, second_ref)


@pytest.mark.parametrize("u_init", ["official", "first_batch"])
@pytest.mark.parametrize(("lam", "gamma"), [(2.0, 0.5), (-2.0, 0.5), (3.0, 1.0)])
def test_host_normaliser_equals_absgd_weights(lam: float, gamma: float, u_init: str) -> None:
    # on the CPU the stable weighting keeps log u as a number; it equals absgd_weights' tensor path
    crit = ABSGDLoss("ce", lam=lam, gamma=gamma, alpha=0.6, u_init=u_init, num_classes=5)
    log_u = torch.tensor(-math.inf, dtype=torch.float64)
    for step in range(4):
        logits, target = _batch(16, 5, seed=10 + step, scale=2.0)
        crit(logits.clone().requires_grad_(True), target)
        loss = F.cross_entropy(logits, target, reduction="none")
        prev = log_u
        if u_init == "first_batch" and torch.isneginf(prev):
            prev = torch.logsumexp(loss / lam, 0) - math.log(16) + math.log(0.6)
        p, log_u = absgd_weights(loss, prev, lam, gamma, 0.6, True)
        torch.testing.assert_close(crit.last_weights, p)
        torch.testing.assert_close(crit.log_u, log_u.double())
