"""Students: shapes, features, gradients, determinism, size rules, config round-trip, registry."""

from __future__ import annotations

import json

import pytest
import torch

from dinomix_core.io.errors import DinomixInputError
from dinomix_core.models import _registry, create_student, list_students, register_student, student_from_config

SHAPE = (16, 32, 32)  # (D, H, W) = (z, y, x)
NAMES = ["unet3d", "vnet", "unet2d", "unet2.5d"]


def tiny(name: str, **cfg) -> torch.nn.Module:
    return create_student(name, **{"num_classes": 3, "width": 4, "depth": 3, **cfg})


def batch(b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 1, *SHAPE, generator=torch.Generator().manual_seed(seed))


def test_registry_lists_the_three_families():
    assert {"unet3d", "vnet", "unet2d"} <= set(list_students())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_logits_and_features_have_documented_shapes(name, norm):
    torch.manual_seed(0)
    model = tiny(name, norm=norm)
    logits, features = model.forward_features(batch())
    assert logits.shape == (2, 3, *SHAPE)
    stride = model.feature_stride
    assert features.shape == (2, model.feature_channels, *(n // s for n, s in zip(SHAPE, stride)))
    assert model.feature_channels == 2 * 4  # second-to-last decoder stage: 2 * width channels
    assert torch.equal(model.eval()(batch()), model.forward_features(batch())[0])
    assert model.num_classes == 3


@pytest.mark.parametrize("name, divisor", [("unet3d", (8, 8, 8)), ("vnet", (8, 8, 8)), ("unet2d", (1, 8, 8)),
                                           ("unet2.5d", (1, 8, 8))])
def test_size_divisor_is_enforced_with_a_clear_message(name, divisor):
    model = tiny(name)
    assert model.size_divisor == divisor
    # A multiple of the divisor works; an in-plane size off by half a divisor fails clearly.
    ok = tuple(2 * d for d in divisor)
    assert model(torch.zeros(1, 1, *ok)).shape == (1, 3, *ok)
    bad = (ok[0], ok[1] + divisor[1] // 2, ok[2])
    with pytest.raises(ValueError, match="size_divisor"):
        model(torch.zeros(1, 1, *bad))
    with pytest.raises(ValueError, match=r"\(B, 1, D, H, W\)"):
        model(torch.zeros(1, 2, *SHAPE))


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gets_a_finite_gradient(name):
    torch.manual_seed(1)
    model = tiny(name, depth=2)
    logits, features = model.forward_features(batch())
    target = torch.randint(0, 3, (2, *SHAPE), generator=torch.Generator().manual_seed(2))
    loss = torch.nn.functional.cross_entropy(logits, target) + features.pow(2).mean()
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert sum(float(p.grad.abs().sum()) for p in model.parameters()) > 0


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_network_and_outputs(name):
    torch.manual_seed(7)
    a = tiny(name).eval()
    torch.manual_seed(7)
    b = tiny(name).eval()
    torch.manual_seed(8)
    c = tiny(name).eval()
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    x = batch()
    assert torch.equal(a(x), b(x))
    assert torch.equal(a(x), a(x))
    assert not torch.allclose(a(x), c(x))


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_grows_with_width(name):
    count = {w: sum(p.numel() for p in tiny(name, width=w).parameters()) for w in (4, 8)}
    # Convolutions dominate and scale with width squared.
    assert 3.0 < count[8] / count[4] <= 4.0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_config_round_trip_rebuilds_the_same_network(name, norm):
    model = tiny(name, norm=norm, dropout=0.25)
    config = json.loads(json.dumps(model.config))  # configs travel as JSON in checkpoints
    assert config["name"] == name
    rebuilt = student_from_config(config)
    assert type(rebuilt) is type(model)
    assert {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    assert torch.equal(model(batch()), rebuilt(batch()))
    assert rebuilt.config == model.config


def test_batch_norm_has_running_stats_and_instance_norm_does_not():
    bn = tiny("unet3d", norm="batch")
    inorm = tiny("unet3d", norm="instance")
    assert any(k.endswith("running_mean") for k in bn.state_dict())
    assert not any(k.endswith("running_mean") for k in inorm.state_dict())
    # Instance norm: a sample's output does not depend on its batch mates (mixed batches),
    # even in training; batch norm in training mixes them.
    x = batch(2)
    with torch.no_grad():
        inorm.train()
        assert torch.allclose(inorm(x[:1]), inorm(x)[:1], rtol=1e-4, atol=1e-4)
        bn.train()
        assert not torch.allclose(bn(x[:1]), bn(x)[:1], rtol=1e-4, atol=1e-4)


def test_vnet_uses_residual_stages_with_the_vnet_schedule_and_additive_skips():
    model = tiny("vnet", depth=3)
    assert [len(stage.convs) for stage in model.enc] == [1, 2, 3, 3]
    assert all(stage.residual for stage in model.enc)
    assert model.config["skip"] == "add"
    plain = tiny("unet3d", depth=3)
    assert [len(stage.convs) for stage in plain.enc] == [2, 2, 2, 2]
    assert not any(stage.residual for stage in plain.enc)


def test_unet2d_treats_every_axial_slice_independently():
    torch.manual_seed(3)
    model = tiny("unet2d").eval()
    x = batch(1)
    y = x.clone()
    y[:, :, 5] = torch.randn(1, 1, *SHAPE[1:])
    out_x, out_y = model(x), model(y)
    changed = (out_x - out_y).abs().amax(dim=(0, 1, 3, 4))
    assert changed[5] > 0
    assert torch.count_nonzero(changed) == 1
    # The 3D student mixes neighbouring slices.
    model3d = tiny("unet3d").eval()
    changed3d = (model3d(x) - model3d(y)).abs().amax(dim=(0, 1, 3, 4))
    assert torch.count_nonzero(changed3d) > 1


def test_unet25d_sees_exactly_its_neighbour_slices():
    torch.manual_seed(4)
    model = tiny("unet2.5d").eval()
    assert model.context == 1 and model.in_channels == 1
    x = batch(1)

    def slices_changed_by(z: int) -> list[int]:
        y = x.clone()
        y[:, :, z] = torch.randn(1, 1, *SHAPE[1:])
        changed = (model(x) - model(y)).abs().amax(dim=(0, 1, 3, 4))
        return torch.nonzero(changed).flatten().tolist()

    assert slices_changed_by(5) == [4, 5, 6]
    # The edge slice stands in for the missing one outside the patch: it reaches slices 0 and 1.
    assert slices_changed_by(0) == [0, 1]
    assert slices_changed_by(SHAPE[0] - 1) == [SHAPE[0] - 2, SHAPE[0] - 1]
    wider = tiny("unet2.5d", context=2).eval()
    y = x.clone()
    y[:, :, 5] = 0
    changed = (wider(x) - wider(y)).abs().amax(dim=(0, 1, 3, 4))
    assert torch.nonzero(changed).flatten().tolist() == [3, 4, 5, 6, 7]


def test_a_unet2d_config_without_context_rebuilds_the_slice_independent_network():
    model = tiny("unet2d")
    assert "context" not in model.config  # checkpoints written before unet2.5d load unchanged
    rebuilt = student_from_config(json.loads(json.dumps(model.config)))
    assert rebuilt.context == 0
    with pytest.raises(ValueError, match="context"):
        tiny("unet2.5d", context=-1)


def test_dropout_only_acts_in_training():
    torch.manual_seed(4)
    model = tiny("vnet", dropout=0.5)
    x = batch(1)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize(
    "cfg, needle",
    [
        ({"norm": "group"}, "norm"),
        ({"width": 0}, "width"),
        ({"depth": 2.5}, "depth"),
        ({"dropout": 1.0}, "dropout"),
        ({"block": "dense"}, "block"),
        ({"num_classes": 1}, "num_classes"),
        ({"kernel": 5}, "kernel"),
    ],
)
def test_bad_options_are_input_errors_naming_the_option(cfg, needle):
    with pytest.raises(DinomixInputError, match=needle):
        tiny("unet3d", **cfg)


def test_unknown_name_and_missing_num_classes_are_input_errors():
    with pytest.raises(DinomixInputError, match="unet2d"):  # the message lists the choices
        create_student("resnet", num_classes=3)
    with pytest.raises(DinomixInputError, match="num_classes"):
        create_student("vnet")
    with pytest.raises(DinomixInputError, match="name"):
        student_from_config({"num_classes": 3})


def test_register_student_adds_a_buildable_name(monkeypatch):
    monkeypatch.setattr(_registry, "_STUDENTS", dict(_registry._STUDENTS))

    @register_student("tiny_vnet_test")
    def factory(*, num_classes: int, width: int = 4):
        return create_student("vnet", num_classes=num_classes, width=width, depth=2)

    assert "tiny_vnet_test" in list_students()
    model = create_student("tiny_vnet_test", num_classes=2)
    assert model(torch.zeros(1, 1, 4, 8, 8)).shape == (1, 2, 4, 8, 8)
    with pytest.raises(ValueError, match="already registered"):
        register_student("tiny_vnet_test")(lambda **k: None)
