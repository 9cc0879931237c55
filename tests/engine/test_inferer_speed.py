"""Speed levers of the inferer (bf16 autocast, channels-last, torch.compile) keep the float32 labels.

Tiny students on small volumes: each lever is compared with the float32, contiguous, eager
run of the same network on the same windows. Labels are compared where the float32 top two
probabilities differ by more than 0.05 (a random network has near-ties everywhere, which any
rounding may flip); probabilities must agree within the lever's precision.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from dinomix_core.engine import _runtime, _slab_inferer
from dinomix_core.engine.inferer import _autocast, predict_labels, sliding_window_probs
from dinomix_core.models import create_student

WINDOW = (16, 32, 32)


def student(seed: int = 0):
    torch.manual_seed(seed)
    return create_student("unet3d", num_classes=4, width=4, depth=2).eval()


def volume(seed: int = 0) -> torch.Tensor:
    """A smooth (z, y, x) volume: blobs, so a random net's classes form regions, plus noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((1, 1, 4, 6, 6), generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(24, 48, 48), mode="trilinear", align_corners=False)[0, 0]
    return smooth + 0.05 * torch.rand((24, 48, 48), generator=g)


def decided(probs: torch.Tensor, margin: float = 0.05) -> torch.Tensor:
    top2 = probs.topk(2, dim=0).values
    return (top2[0] - top2[1]) > margin


def reference(model, image):
    return sliding_window_probs(model, image, window=WINDOW, device="cpu", precision="float32", channels_last=False)


def test_bf16_autocast_on_cpu_keeps_the_float32_labels():
    model, image = student(), volume()
    ref = reference(model, image)
    bf16 = sliding_window_probs(model, image, window=WINDOW, device="cpu", precision="bfloat16")
    assert (bf16 - ref).abs().mean() < 0.01  # bf16 keeps ~3 significant digits (measured: 0.003)
    assert not torch.equal(bf16, ref)  # it really ran in bf16
    sure = decided(ref)
    assert sure.float().mean() > 0.3  # enough decided voxels to judge (measured: 0.42)
    agree = (bf16.argmax(0) == ref.argmax(0))[sure].float().mean()
    assert agree > 0.999


def test_auto_precision_uses_bf16_on_the_cpu_only_where_it_is_native(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(_runtime, "cpu_has_native_bf16", lambda: False)
    assert not isinstance(_autocast(cpu, True, "auto"), torch.autocast)
    assert isinstance(_autocast(cpu, True, "bfloat16"), torch.autocast)  # asked for: used even when emulated
    monkeypatch.setattr(_runtime, "cpu_has_native_bf16", lambda: True)
    ctx = _autocast(cpu, True, "auto")
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
    assert not isinstance(_autocast(cpu, False, "auto"), torch.autocast)  # amp=False wins
    assert not isinstance(_autocast(cpu, True, "float32"), torch.autocast)
    with pytest.raises(ValueError, match="needs CUDA"):
        _autocast(cpu, True, "float16")
    with pytest.raises(ValueError, match="precision must be one of"):
        _autocast(cpu, True, "int8")


def test_channels_last_gives_the_contiguous_probabilities():
    model, image = student(1), volume(1)
    ref = reference(model, image)
    cl = sliding_window_probs(model, image, window=WINDOW, device="cpu", precision="float32", channels_last=True)
    assert torch.allclose(cl, ref, atol=1e-5)
    assert model.enc[0].convs[0][0].weight.is_contiguous()  # the layout is restored afterwards


class _Boom(RuntimeError):
    pass


def test_compile_that_cannot_even_start_falls_back_to_eager(monkeypatch):
    model, image = student(2), volume(2)
    ref = reference(model, image)

    def refuse(*args, **kwargs):
        raise _Boom("no compiler here")

    monkeypatch.setattr(torch, "compile", refuse)
    with pytest.warns(RuntimeWarning, match="running the network eagerly"):
        out = sliding_window_probs(model, image, window=WINDOW, device="cpu", precision="float32",
                                   channels_last=False, compile=True)
    assert torch.allclose(out, ref, atol=1e-6)
    assert "_Boom: no compiler here" in model.__dict__["_dinomix_compiled"].failed


def test_compiled_call_that_fails_falls_back_once_and_stays_eager(monkeypatch):
    """Compilation is lazy: a failure at the first call (Triton blocked, no C++ compiler) must not
    lose the prediction; later batches and later predictions go straight to eager mode."""
    model, image = student(3), volume(3)
    ref_labels = predict_labels(model, image, window=WINDOW, device="cpu", precision="float32", channels_last=False)
    calls = []

    def broken_compile(net, **kwargs):
        def run(x):
            calls.append(x.shape)
            raise _Boom("triton is blocked")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = predict_labels(model, image, window=WINDOW, device="cpu", precision="float32", compile=True)
        again = _slab_inferer.stream_probabilities(model, image, window=WINDOW, on_slab=lambda z0, p: None,
                                                   device="cpu", compile=True)
    assert again == 4
    np.testing.assert_array_equal(labels, ref_labels)
    assert len(calls) == 1  # tried once, then eager for every other batch and the second prediction
    assert sum("running the network eagerly" in str(w.message) for w in caught) == 1


def test_an_error_of_the_network_itself_still_surfaces_with_compile(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda net, **kw: net)  # "compiled" = the net: same error
    model = student(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not blamed on compilation
        with pytest.raises(ValueError, match="multiple of"):
            sliding_window_probs(model, volume(4), window=(15, 32, 32), device="cpu", compile=True)
    assert model.__dict__["_dinomix_compiled"].failed is None


def test_compile_keeps_the_state_dict_and_reuses_the_runner(monkeypatch):
    built = []
    monkeypatch.setattr(torch, "compile", lambda net, **kw: built.append(net) or net)
    model, image = student(5), volume(5)
    keys = list(model.state_dict())
    for _ in range(2):
        sliding_window_probs(model, image, window=WINDOW, device="cpu", compile=True)
    assert len(built) == 1
    assert list(model.state_dict()) == keys
