"""Sliding-window inference: exactness against direct forwards, padding, skipping, TTA, geometry."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from dinomix_core.engine._windows import WindowGrid, axis_starts, gaussian_importance, windows_touching
from dinomix_core.engine.inferer import (
    InferenceCancelled,
    body_mask,
    predict_labels,
    predict_volume,
    sliding_window_probs,
)
from dinomix_core.io.volume import Volume

C = 4


class Pointwise(nn.Module):
    """1x1x1 convolutions only: each voxel's logits depend on that voxel alone."""

    def __init__(self, classes: int = C):
        super().__init__()
        self.a = nn.Conv3d(1, 8, 1)
        self.b = nn.Conv3d(8, classes, 1)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


class SmallConv(nn.Module):
    """3x3x3 context (zero padding): windows see different borders, so blending matters."""

    def __init__(self, classes: int = C):
        super().__init__()
        self.a = nn.Conv3d(1, 6, 3, padding=1)
        self.b = nn.Conv3d(6, classes, 1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class Counting(nn.Module):
    """Wraps a model and records the (z, y, x) content of every window it is given."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.windows: list[torch.Tensor] = []

    def forward(self, x):
        self.windows.extend(w[0].clone() for w in x)
        return self.inner(x)


def seeded(model_cls, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return model_cls(**kw)


def rand_volume(shape, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g)


def reference_probs(model, volume: torch.Tensor, window, overlap: float) -> torch.Tensor:
    """Plain loop over the window grid: one window at a time, explicit weight sums."""
    starts = [axis_starts(s, w, overlap) for s, w in zip(volume.shape, window)]
    weight = gaussian_importance(window)
    acc = weights = None
    with torch.no_grad():
        for z, y, x in itertools.product(*starts):
            sl = (slice(z, z + window[0]), slice(y, y + window[1]), slice(x, x + window[2]))
            probs = torch.softmax(model(volume[sl][None, None]), dim=1)[0]
            if acc is None:
                acc = torch.zeros((probs.shape[0], *volume.shape))
                weights = torch.zeros(volume.shape)
            acc[(slice(None), *sl)] += probs * weight
            weights[sl] += weight
    return acc / weights


# --- window grid and weights -----------------------------------------------------------


def test_axis_starts_follow_the_published_grid_and_cover_the_axis():
    assert axis_starts(100, 64, 0.5) == [0, 32, 36]
    assert axis_starts(200, 64, 0.5) == [0, 32, 64, 96, 128, 136]
    assert axis_starts(512, 128, 0.5) == [0, 64, 128, 192, 256, 320, 384]
    assert axis_starts(64, 64, 0.5) == [0]
    assert axis_starts(10, 4, 0.0) == [0, 4, 6]
    for size, window, overlap in [(37, 8, 0.5), (100, 17, 0.3), (9, 9, 0.9), (50, 3, 0.9)]:
        starts = axis_starts(size, window, overlap)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + window] = True
        assert covered.all() and starts[-1] + window == size and starts == sorted(starts)
        assert all(b - a <= max(1, int(window * (1 - overlap))) for a, b in zip(starts, starts[1:]))
    with pytest.raises(ValueError, match="smaller than the window"):
        axis_starts(5, 8, 0.5)


def test_gaussian_weights_shape_peak_and_sigma():
    window = (9, 17, 33)
    w = gaussian_importance(window)
    assert w.shape == window and w.dtype == torch.float32
    assert w[4, 8, 16] == pytest.approx(1.0) and w.max() == pytest.approx(1.0)
    for axis in range(3):
        assert torch.equal(w, torch.flip(w, (axis,)))
    profile = w[4, 8, :].double()  # along x through the centre: exp(-d^2 / (2 sigma^2))
    sigma = 0.125 * 33
    expected = torch.exp(-0.5 * ((torch.arange(33, dtype=torch.float64) - 16.0) / sigma) ** 2).clamp(min=1e-3)
    assert torch.allclose(profile, expected, atol=1e-6)
    assert torch.all(profile[16:].diff() <= 0) and profile[0] < profile[8] < profile[16]
    assert w.min() >= 1e-3  # floored, never zero
    even = gaussian_importance((8, 8, 8))
    assert torch.equal(even[3:5, 3:5, 3:5], torch.full((2, 2, 2), even.max().item()))


def test_windows_touching_matches_brute_force():
    rng = np.random.default_rng(1)
    mask = rng.random((20, 30, 26)) > 0.9995
    grid = WindowGrid.build(mask.shape, (8, 10, 12), (0.5, 0.5, 0.5))
    expected = [bool(mask[grid.slices(c)].any()) for c in grid.corners()]
    assert windows_touching(mask, grid) == expected
    assert 0 < sum(expected) < len(grid)


# --- exactness -------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_pointwise_model_equals_direct_forward(batch):
    model = seeded(Pointwise)
    volume = rand_volume((20, 40, 44))
    probs = sliding_window_probs(model, volume, window=(8, 16, 16), sw_batch_size=batch, device="cpu")
    with torch.no_grad():
        direct = torch.softmax(model(volume[None, None]), dim=1)[0]
    assert probs.shape == (C, 20, 40, 44) and probs.dtype == torch.float32 and probs.device.type == "cpu"
    assert torch.allclose(probs, direct, atol=1e-6)
    labels = predict_labels(model, volume.numpy(), window=(8, 16, 16), sw_batch_size=batch, device="cpu")
    assert labels.dtype == np.uint8 and np.array_equal(labels, direct.argmax(0).numpy())


@pytest.mark.parametrize("channels_last", [False, True])
def test_context_model_equals_window_by_window_reference(channels_last):
    model = seeded(SmallConv)
    volume = rand_volume((18, 30, 26), seed=2)
    window = (8, 12, 12)
    probs = sliding_window_probs(
        model, volume[None], window=window, overlap=0.5, sw_batch_size=5, device="cpu", channels_last=channels_last
    )
    ref = reference_probs(model, volume, window, 0.5)
    assert torch.allclose(probs, ref, atol=1e-5)
    # blending is not trivially the direct forward: window borders see zero padding
    with torch.no_grad():
        direct = torch.softmax(model(volume[None, None]), dim=1)[0]
    assert (probs - direct).abs().max() > 1e-3
    assert torch.allclose(probs.sum(0), torch.ones(probs.shape[1:]), atol=1e-5)


def test_small_volume_is_padded_with_its_minimum_and_cropped_back():
    model = seeded(SmallConv)
    volume = rand_volume((5, 12, 9), seed=3) + 2.0
    window = (8, 16, 16)
    probs = sliding_window_probs(model, volume, window=window, device="cpu")
    assert probs.shape == (C, 5, 12, 9)
    fill = float(volume.min())
    padded = torch.full(window, fill)
    padded[1:6, 2:14, 3:12] = volume  # (before, after) = (1, 2), (2, 2), (3, 4)
    with torch.no_grad():
        expected = torch.softmax(model(padded[None, None]), dim=1)[0][:, 1:6, 2:14, 3:12]
    assert torch.allclose(probs, expected, atol=1e-6)
    # only one axis too short: the others keep their sliding windows
    tall = rand_volume((30, 12, 20), seed=4)
    assert sliding_window_probs(model, tall, window=window, device="cpu").shape == (C, 30, 12, 20)


# --- skipping --------------------------------------------------------------------------


def test_windows_outside_the_mask_are_never_run_and_are_background():
    inner = seeded(SmallConv)
    volume = rand_volume((16, 40, 40), seed=5)
    mask = np.zeros(volume.shape, bool)
    mask[2:9, 5:14, 22:30] = True
    window = (8, 12, 12)
    grid = WindowGrid.build(volume.shape, window, (0.5,) * 3)
    expected_run = [c for c in grid.corners() if mask[grid.slices(c)].any()]

    counting = Counting(inner)
    probs = sliding_window_probs(counting, volume, window=window, skip_mask=mask, sw_batch_size=3, device="cpu")
    assert 0 < len(counting.windows) == len(expected_run) < len(grid)
    for corner, seen in zip(expected_run, counting.windows):
        assert torch.equal(seen, volume[grid.slices(corner)])

    full = sliding_window_probs(inner, volume, window=window, device="cpu")
    assert torch.allclose(probs[:, mask], full[:, mask], atol=1e-6)  # exact inside the mask
    covered_by_run = np.zeros(volume.shape, bool)
    for corner in expected_run:
        covered_by_run[grid.slices(corner)] = True
    assert (~covered_by_run).sum() > 0
    assert torch.all(probs[0][torch.from_numpy(~covered_by_run)] == 1.0)
    labels = predict_labels(inner, volume, window=window, skip_mask=mask, device="cpu")
    assert np.all(labels[~covered_by_run] == 0)
    assert np.array_equal(labels[mask], full.argmax(0).numpy()[mask])


def test_everything_skipped_gives_background_of_the_right_class_count():
    model = seeded(SmallConv, classes=3)
    volume = rand_volume((8, 16, 16))
    probs = sliding_window_probs(model, volume, window=(8, 8, 8), skip_mask=np.zeros(volume.shape, bool), device="cpu")
    assert probs.shape == (3, 8, 16, 16)
    assert torch.all(probs[0] == 1.0) and torch.all(probs[1:] == 0.0)


# --- test-time flips -------------------------------------------------------------------


def test_flips_change_nothing_for_a_flip_equivariant_model():
    model = seeded(SmallConv)
    with torch.no_grad():  # a kernel symmetric under every flip + zero padding = flip-equivariant
        k = model.a.weight
        k.copy_(sum(torch.flip(k, dims) for r in range(4) for dims in itertools.combinations((2, 3, 4), r)) / 8)
    volume = rand_volume((12, 20, 24), seed=6)
    plain = sliding_window_probs(model, volume, window=(8, 12, 12), device="cpu")
    flipped = sliding_window_probs(model, volume, window=(8, 12, 12), tta_flips=(0, 1, 2), device="cpu")
    assert torch.allclose(plain, flipped, atol=1e-5)


def test_flips_average_the_softmax_of_every_mirrored_pass():
    model = seeded(SmallConv, seed=7)
    volume = rand_volume((8, 12, 12), seed=7)  # one window: TTA is the plain mean over 4 passes
    probs = sliding_window_probs(model, volume, window=(8, 12, 12), tta_flips=(2, 0), device="cpu")
    x = volume[None, None]
    with torch.no_grad():
        passes = [torch.flip(torch.softmax(model(torch.flip(x, d)), 1), d) for d in [(), (2,), (4,), (2, 4)]]
    assert torch.allclose(probs, torch.stack(passes).mean(0)[0], atol=1e-6)
    assert (probs - passes[0][0]).abs().max() > 1e-3


# --- control: progress, cancel, model state --------------------------------------------


def test_progress_reports_windows_run():
    model = seeded(Pointwise)
    volume = rand_volume((16, 24, 24))
    calls = []
    sliding_window_probs(model, volume, window=(8, 12, 12), sw_batch_size=4, progress=lambda d, t: calls.append((d, t)), device="cpu")
    total = 3 * 3 * 3
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == [0, 4, 8, 12, 16, 20, 24, 27] and {t for _, t in calls} == {total}

    mask = np.zeros(volume.shape, bool)
    mask[0, 0, 0] = True  # touches exactly one window
    calls.clear()
    predict_labels(model, volume, window=(8, 12, 12), skip_mask=mask, progress=lambda d, t: calls.append((d, t)), device="cpu")
    assert calls == [(0, 1), (1, 1)]


def test_cancel_raises_between_batches_and_restores_the_model():
    model = seeded(SmallConv)
    model.train()
    params = [p.data_ptr() for p in model.parameters()]
    counting = Counting(model)
    asked = []

    def cancel():
        asked.append(1)
        return len(asked) > 2

    with pytest.raises(InferenceCancelled, match="after 4 of 27 windows"):
        sliding_window_probs(counting, rand_volume((16, 24, 24)), window=(8, 12, 12), sw_batch_size=2, cancel=cancel, device="cpu")
    assert len(counting.windows) == 4
    assert model.training
    assert params == [p.data_ptr() for p in model.parameters()]  # the very same tensors
    assert all(p.is_contiguous() for p in model.parameters())


def test_model_mode_and_weights_survive_inference():
    model = seeded(SmallConv)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sliding_window_probs(model, rand_volume((8, 12, 12)), window=(8, 12, 12), device="cpu", channels_last=True)
    assert model.training
    assert all(torch.equal(before[k], v) and v.is_contiguous() for k, v in model.state_dict().items())


def test_bad_arguments_are_named():
    model = seeded(Pointwise)
    volume = rand_volume((8, 12, 12))
    with pytest.raises(ValueError, match="skip_mask has shape"):
        sliding_window_probs(model, volume, window=8, skip_mask=np.ones((8, 12, 11), bool))
    with pytest.raises(ValueError, match="tta_flips"):
        sliding_window_probs(model, volume, window=8, tta_flips=(3,))
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_probs(model, volume, window=8, overlap=1.0)
    with pytest.raises(ValueError, match="window"):
        sliding_window_probs(model, volume, window=(8, 8))
    with pytest.raises(ValueError, match=r"\(B, C, D, H, W\)"):
        sliding_window_probs(lambda x: x[:, :, :4], volume, window=8)
    with pytest.raises(ValueError, match="non-empty"):
        sliding_window_probs(model, torch.zeros((0, 12, 12)), window=8)
    with pytest.raises(ValueError, match="needs >= 2 classes"):
        sliding_window_probs(nn.Conv3d(1, 1, 1), volume, window=8)


def test_float16_accumulator_agrees_with_float32():
    model = seeded(SmallConv, seed=8)
    volume = rand_volume((16, 24, 24), seed=8)
    kw = dict(window=(8, 12, 12), device="cpu")
    p32 = sliding_window_probs(model, volume, **kw)
    p16 = sliding_window_probs(model, volume, accumulate_dtype=torch.float16, **kw)
    assert p16.dtype == torch.float32 and torch.allclose(p16, p32, atol=3e-3)
    l16 = predict_labels(model, volume, accumulate_dtype=torch.float16, **kw)
    assert (l16 == p32.argmax(0).numpy()).mean() > 0.99
    with pytest.raises(ValueError, match="accumulate_dtype"):
        predict_labels(model, volume, accumulate_dtype=torch.int32, **kw)


# --- body mask and whole volumes -------------------------------------------------------


def synthetic_ct(shape=(12, 48, 64)) -> np.ndarray:
    """Air, a body (soft tissue) on the low-x side with a gas pocket and a lung, and a table."""
    z, y, x = np.indices(shape)
    hu = np.full(shape, -1000.0, np.float32)
    body = ((y - 22) / 16.0) ** 2 + ((x - 16) / 14.0) ** 2 < 1
    hu[body] = 40.0
    hu[body & (((y - 20) / 4.0) ** 2 + ((x - 14) / 4.0) ** 2 < 1) & (z > 3) & (z < 8)] = -950.0  # bowel gas
    hu[body & (((y - 26) / 5.0) ** 2 + ((x - 20) / 4.0) ** 2 < 1) & (z >= 8)] = -850.0  # lung to the top slice
    hu[:, 42:44, 2:40] = 200.0  # table, separated from the body by air
    return hu


def test_body_mask_keeps_the_body_fills_its_holes_and_drops_the_table():
    hu = synthetic_ct()
    z, y, x = np.indices(hu.shape)
    outline = ((y - 22) / 16.0) ** 2 + ((x - 16) / 14.0) ** 2 < 1
    mask = body_mask(hu)
    assert mask.dtype == bool and mask.shape == hu.shape
    assert np.array_equal(mask, outline)  # gas and lung filled in, table and air out
    assert not body_mask(np.full((4, 8, 8), -1000.0)).any()


def _reference_body_mask(hu: np.ndarray) -> np.ndarray:
    """The definition, on the whole grid: largest 3D component above -500 HU, slice holes filled."""
    from scipy import ndimage

    labels, count = ndimage.label(hu > -500.0)
    if count == 0:
        return np.zeros(hu.shape, bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    body = labels == np.argmax(sizes)
    return np.stack([ndimage.binary_fill_holes(s) for s in body])


@pytest.mark.parametrize("seed", range(4))
def test_body_mask_cropping_to_the_body_changes_nothing(seed):
    rng = np.random.default_rng(seed)
    hu = np.full((15, 60, 70), -1000.0)
    inner = synthetic_ct()  # body with gas, lung and a table
    z0, y0, x0 = rng.integers(0, 4), rng.integers(0, 60 - 44), rng.integers(0, 70 - 40)
    hu[z0:z0 + inner.shape[0], y0:y0 + 44, x0:x0 + 40] = inner[:, :44, :40]
    blobs = rng.random(hu.shape) > 0.995  # specks of noise above the threshold, some in the body's holes
    hu[blobs] = 100.0
    np.testing.assert_array_equal(body_mask(hu), _reference_body_mask(hu))


def test_body_mask_holds_every_organ_of_the_real_ct(real_ct_dir):
    import SimpleITK as sitk

    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(real_ct_dir / "ct.nii.gz")))
    organs = sitk.GetArrayFromImage(sitk.ReadImage(str(real_ct_dir / "seg_btcv13.nii.gz"))) > 0
    mask = body_mask(hu)
    assert organs.any() and not (organs & ~mask).any()
    assert 0.3 < mask.mean() < 0.95
    assert mask[:, 0, :].sum() < mask[:, hu.shape[1] // 2, :].sum()  # air in front of the body


def test_predict_volume_keeps_the_geometry_and_skips_air():
    hu = synthetic_ct()
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # rotated 90 degrees about z
    volume = Volume(hu, spacing_zyx=(3.0, 0.8, 0.7), origin_xyz=(-12.5, 40.0, 7.25), direction=direction)

    class LowIntensityIsOrgan(nn.Module):  # says "class 1" wherever the input is dark (air too)
        def forward(self, x):
            return torch.cat([x, 1.0 - x, torch.zeros_like(x)], dim=1) * 10

    def preprocess(a):
        return np.clip((a + 1000.0) / 1400.0, 0, 1).astype(np.float32)

    model = LowIntensityIsOrgan()
    window = (4, 16, 16)
    labels = predict_volume(model, volume, preprocess=preprocess, window=window, device="cpu")
    assert isinstance(labels, Volume) and labels.same_grid(volume) and labels.direction == direction
    assert labels.array.dtype == np.uint8 and labels.modality == "labels" and labels.source is None

    mask = body_mask(hu)
    grid = WindowGrid.build(hu.shape, window, (0.5,) * 3)
    covered = np.zeros(hu.shape, bool)
    for corner in grid.corners():
        if mask[grid.slices(corner)].any():
            covered[grid.slices(corner)] = True
    assert (~covered).sum() > hu.size // 4  # the air at high x is never run ...
    assert np.all(labels.array[~covered] == 0)  # ... and is background
    assert np.all(labels.array[~mask] == 0)  # so is air in windows that did run: no organ outside the body
    assert np.all(labels.array[mask & (hu < -500)] == 1)  # gas inside the body is still predicted
    everywhere = predict_volume(model, volume, preprocess=preprocess, window=window, device="cpu", skip_outside_body=False)
    assert np.all(everywhere.array[hu < -500] == 1)

    labels2, probs = predict_volume(model, volume, preprocess=preprocess, window=window, device="cpu", return_probs=True)
    assert probs.shape == (3, *hu.shape) and np.array_equal(labels2.array, labels.array)
    assert labels2.same_grid(volume)
    with pytest.raises(ValueError, match="changed the volume's shape"):
        predict_volume(model, volume, preprocess=lambda a: a[:, ::2], window=window)
    with pytest.raises(ValueError, match="either skip_mask or skip_outside_body"):
        predict_volume(model, volume, preprocess=preprocess, window=window, skip_outside_body=True, skip_mask=mask)
    own_mask = np.ones(hu.shape, bool)  # a caller's mask replaces the body mask
    unmasked = predict_volume(model, volume, preprocess=preprocess, window=window, device="cpu", skip_mask=own_mask)
    assert np.array_equal(unmasked.array, everywhere.array)


# --- CUDA ------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("accumulate_device", [None, "cpu"])
def test_cuda_autocast_matches_cpu(accumulate_device):
    model = seeded(SmallConv, seed=9)
    volume = rand_volume((16, 32, 32), seed=9)
    kw = dict(window=(8, 16, 16), sw_batch_size=3)
    cpu = sliding_window_probs(model, volume, device="cpu", **kw)
    gpu = sliding_window_probs(model, volume, device="cuda", amp=True, accumulate_device=accumulate_device, **kw)
    assert gpu.device.type == "cpu" and gpu.dtype == torch.float32
    assert torch.allclose(gpu, cpu, atol=2e-2)
    exact = sliding_window_probs(model, volume, device="cuda", amp=False, **kw)
    assert torch.allclose(exact, cpu, atol=5e-3)  # cuDNN may use TF32 for float32 convolutions
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.gpu
@needs_cuda
def test_cuda_labels_and_skipping():
    model = seeded(SmallConv, seed=10)
    volume = rand_volume((16, 32, 32), seed=10)
    mask = np.zeros(volume.shape, bool)
    mask[:8, :12, :12] = True
    kw = dict(window=(8, 16, 16), skip_mask=mask, amp=False)
    cpu = predict_labels(model, volume, device="cpu", **kw)
    gpu = predict_labels(model, volume, device="cuda", **kw)
    assert math.isclose((cpu == gpu).mean(), 1.0, abs_tol=1e-3)
