"""Reference models: shapes, ResNet-32 parameter count and shortcuts, features/classifier split, registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tailwise.models import (
    CNN1D,
    MLP,
    BasicBlock,
    CifarResNet,
    SmallCNN,
    build_head,
    replace_classifier,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
    resnet110,
)
from tailwise.registry import MODELS


def _normed_available() -> bool:
    try:
        import tailwise.models.normed_linear  # noqa: F401
    except ImportError:
        return False
    return True


needs_normed = pytest.mark.skipif(not _normed_available(), reason="tailwise.models.normed_linear not available yet")

# (registry name, constructor kwargs, input shape, feature_dim)
CASES = [
    ("resnet32", {"num_classes": 10}, (2, 3, 32, 32), 64),
    ("resnet20", {"num_classes": 7, "in_channels": 1}, (2, 1, 32, 32), 64),
    ("small_cnn", {"num_classes": 10}, (3, 1, 28, 28), 128),
    ("small_cnn", {"num_classes": 4, "in_channels": 3, "input_size": 32}, (3, 3, 32, 32), 128),
    ("mlp", {"num_classes": 10}, (3, 1, 28, 28), 256),
    ("mlp", {"num_classes": 5, "input_dim": (1, 40), "hidden_dims": [64, 32]}, (3, 1, 40), 32),
    ("cnn1d", {"num_classes": 10}, (3, 1, 40), 128),
]


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "kwargs", "shape", "dim"), CASES)
def test_shapes_features_and_classifier(name: str, kwargs: dict, shape: tuple, dim: int) -> None:
    model = MODELS.build(name, kwargs).eval()
    x = torch.randn(shape)
    logits = model(x)
    assert logits.shape == (shape[0], kwargs["num_classes"])
    feats = model.features(x)
    assert feats.shape == (shape[0], dim)
    assert model.feature_dim == dim
    assert isinstance(model.classifier, nn.Module)
    torch.testing.assert_close(model.classifier(feats), logits)


@needs_normed
@pytest.mark.parametrize(("name", "kwargs", "shape", "dim"), CASES)
def test_normed_head(name: str, kwargs: dict, shape: tuple, dim: int) -> None:
    from tailwise.models.normed_linear import NormedLinear

    model = MODELS.build(name, {**kwargs, "head": "normed"}).eval()
    assert isinstance(model.classifier, NormedLinear)
    logits = model(torch.randn(shape))
    assert logits.shape == (shape[0], kwargs["num_classes"])
    assert bool((logits.abs() <= 1 + 1e-5).all())


def test_resnet32_parameter_count() -> None:
    assert _count(resnet32(num_classes=10)) == 464_154
    assert _count(resnet32(num_classes=100)) == 464_154 + 90 * 65
    assert _count(resnet20()) == 269_722
    assert _count(resnet110()) == 1_727_962


@needs_normed
def test_resnet32_normed_parameter_count() -> None:
    # The cosine head has no bias: 64 * 10 weights instead of 64 * 10 + 10.
    assert _count(resnet32(num_classes=10, head="normed")) == 464_154 - 10


@pytest.mark.parametrize(("factory", "depth"), [(resnet20, 20), (resnet32, 32), (resnet44, 44), (resnet56, 56), (resnet110, 110)])
def test_resnet_depths(factory, depth: int) -> None:
    model = factory()
    blocks = (depth - 2) // 6
    assert model.depth == depth
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3)] == [blocks] * 3
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    linears = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert convs + linears == depth  # option A adds no convolution


def test_resnet_depth_argument_through_registry() -> None:
    model = MODELS.build("resnet_cifar", {"depth": 44}, num_classes=3)
    assert isinstance(model, CifarResNet)
    assert model.depth == 44
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_option_a_shortcut_shapes_and_values() -> None:
    block = BasicBlock(16, 32, stride=2, shortcut="A")
    assert sum(p.numel() for p in block.shortcut.parameters()) == 0
    x = torch.randn(2, 16, 32, 32)
    s = block.shortcut(x)
    assert s.shape == (2, 32, 16, 16)
    # Subsampled input in the middle channels, zeros in the 8 padded channels on each side.
    torch.testing.assert_close(s[:, 8:24], x[:, :, ::2, ::2])
    assert bool((s[:, :8] == 0).all()) and bool((s[:, 24:] == 0).all())
    assert block(x).shape == (2, 32, 16, 16)
    model = resnet32()
    for stage, c in zip((model.layer1, model.layer2, model.layer3), (16, 32, 64)):
        assert isinstance(stage[0].shortcut, nn.Identity) == (c == 16)
        assert stage[0].conv2.out_channels == c
    out = torch.randn(2, 16, 32, 32)
    for stage, hw in zip((model.layer1, model.layer2, model.layer3), (32, 16, 8)):
        out = stage(out)
        assert out.shape[-2:] == (hw, hw)


def test_option_b_shortcut() -> None:
    model = resnet32(shortcut="B")
    assert isinstance(model.layer2[0].shortcut, nn.Sequential)
    assert _count(model) > 464_154
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_kaiming_normal_init() -> None:
    torch.manual_seed(0)
    model = resnet110()
    w = model.layer3[0].conv1.weight  # fan_in = 32 * 9
    assert abs(float(w.detach().std()) - (2.0 / (32 * 9)) ** 0.5) < 0.01
    assert isinstance(model.classifier, nn.Linear)
    assert abs(float(model.classifier.weight.detach().std()) - (2.0 / 64) ** 0.5) < 0.06


def test_channels_last_matches() -> None:
    model = resnet20().eval()
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_backward_and_train_mode() -> None:
    for model, x in ((resnet20(), torch.randn(4, 3, 32, 32)), (SmallCNN(), torch.randn(4, 1, 28, 28)), (CNN1D(), torch.randn(4, 1, 40)), (MLP(input_dim=40), torch.randn(4, 40))):
        loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())


def test_cnn1d_accepts_2d_input() -> None:
    model = CNN1D().eval()
    x = torch.randn(5, 40)
    torch.testing.assert_close(model(x), model(x.unsqueeze(1)))


def test_mlp_widths_and_depth() -> None:
    model = MLP(num_classes=3, input_dim=12, hidden_dims=16, depth=3, batch_norm=True, dropout=0.1)
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 4
    assert model.feature_dim == 16
    linear = MLP(num_classes=3, input_dim=(2, 6), hidden_dims=())
    assert linear.feature_dim == 12
    assert linear(torch.randn(4, 2, 6)).shape == (4, 3)
    with pytest.raises(ValueError, match=r"input_dim = 12 elements per sample; got shape \(4, 13\)"):
        linear(torch.randn(4, 13))


def test_registry_names_and_context() -> None:
    for name in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet_cifar", "small_cnn", "mlp", "cnn1d"):
        assert name in MODELS
        assert {"num_classes", "in_channels", "head"} <= set(MODELS.parameters(name))
    model = MODELS.build("small_cnn", None, num_classes=3, in_channels=1, class_counts=[1, 2, 3])
    assert model.classifier.out_features == 3
    with pytest.raises(ValueError, match="unknown parameter"):
        MODELS.build("cnn1d", {"width": 3})


def test_replace_classifier() -> None:
    model = resnet32(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    feats = model.features(x)
    new = nn.Linear(64, 4)
    old = replace_classifier(model, new)
    assert isinstance(old, nn.Linear) and old.out_features == 10
    assert model.classifier is new
    torch.testing.assert_close(model(x), new(feats))
    replace_classifier(model, nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 2)))
    assert model(x).shape == (2, 2)
    with pytest.raises(ValueError, match=r"model.feature_dim = 64 input features; got a head with in_features=32"):
        replace_classifier(model, nn.Linear(32, 10))
    with pytest.raises(TypeError, match=r"new_head must be an nn\.Module"):
        replace_classifier(model, lambda h: h)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'classifier' sub-module"):
        replace_classifier(nn.Linear(2, 2), nn.Linear(2, 2))


def test_build_head() -> None:
    head = build_head("linear", 8, 3)
    assert isinstance(head, nn.Linear) and head.bias is not None
    with pytest.raises(ValueError, match=r"head must be one of \['linear', 'normed'\]; got 'cosine'"):
        build_head("cosine", 8, 3)  # type: ignore[arg-type]


@pytest.mark.parametrize("factory", [resnet32, SmallCNN, MLP, CNN1D])
def test_bad_num_classes(factory) -> None:
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 1; got 0"):
        factory(num_classes=0)
    with pytest.raises(TypeError, match=r"num_classes must be an integer >= 1; got 2.5"):
        factory(num_classes=2.5)
    with pytest.raises(ValueError, match=r"head must be one of \['linear', 'normed'\]; got 'cos'"):
        factory(head="cos")
    with pytest.raises(ValueError, match=r"in_channels must be an integer >= 1; got -1"):
        factory(in_channels=-1)


def test_bad_architecture_arguments() -> None:
    with pytest.raises(ValueError, match=r"depth must be 6n \+ 2 \(20, 32, 44, 56, 110, ...\); got 33"):
        CifarResNet(depth=33)
    with pytest.raises(ValueError, match=r"shortcut must be one of \['A', 'B'\]; got 'C'"):
        resnet32(shortcut="C")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"input_size must be at least 2\*\*2 = 4 per side"):
        SmallCNN(input_size=3)
    with pytest.raises(ValueError, match=r"input_length must be at least 2\*\*3 = 8"):
        CNN1D(input_length=7)
    with pytest.raises(ValueError, match=r"dropout must lie in \[0, 1\]; got 1.5"):
        MLP(dropout=1.5)
    with pytest.raises(ValueError, match=r"depth must be None when hidden_dims is a sequence"):
        MLP(hidden_dims=(4, 4), depth=2)
