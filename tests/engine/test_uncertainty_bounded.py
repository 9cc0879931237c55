"""Bounded-memory prediction with uncertainty: same numbers as the full-volume path, a window-deep accumulator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dinomix_core.engine._slab_inferer import stream_probabilities
from dinomix_core.engine._uncertainty import SlabUncertainty, predict_with_uncertainty_bounded
from dinomix_core.engine.inferer import InferenceCancelled, body_mask, predict_volume, sliding_window_probs
from dinomix_core.engine.pipeline import voxel_uncertainty
from dinomix_core.io.volume import Volume
from dinomix_core.project.ranking import uncertainty_summary

C = 5


class SmallConv(nn.Module):
    """3x3x3 context, so the windows' borders differ and the blend matters."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv3d(1, 6, 3, padding=1)
        self.b = nn.Conv3d(6, C, 1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x))) * 4.0


def ct(shape=(37, 40, 44)) -> Volume:
    """A body ellipse (soft tissue, some organs) in air, HU, (z, y, x) with 1.5 x 0.8 x 0.8 mm voxels."""
    rng = np.random.default_rng(3)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    hu = np.full(shape, -1000.0, np.float32)
    body = ((y - shape[1] / 2) / (shape[1] * 0.3)) ** 2 + ((x - shape[2] * 0.4) / (shape[2] * 0.3)) ** 2 <= 1
    hu[body] = 40 + rng.normal(0, 30, body.sum())
    hu[body & (np.abs(z - 18) < 6) & (x < shape[2] * 0.4)] = 180
    return Volume(hu, (1.5, 0.8, 0.8), (1.0, 2.0, 3.0), modality="CT")


def preprocess(hu):
    return np.clip((hu + 75) / 350.0, 0, 1).astype(np.float32)


def old_path(net, volume, window, class_weights=None, tta=False):
    """What pipeline.predict_with_uncertainty computed before: full (C, z, y, x) probabilities."""
    body = body_mask(np.asarray(volume.array))
    labels, probs = predict_volume(net, volume, preprocess=preprocess, window=window, overlap=0.5, sw_batch_size=2,
                                   device="cpu", return_probs=True, skip_mask=body, tta_flips=(1, 2) if tta else ())
    unc = voxel_uncertainty(probs)
    score, per_class = uncertainty_summary(probs.numpy(), class_weights)
    labels.array[~body] = 0
    unc[~body] = 0
    return labels, unc, score, per_class


@pytest.mark.parametrize("window,tta", [((8, 16, 16), False), ((16, 48, 24), True)])
def test_same_labels_uncertainty_and_score_as_full_volume_path(window, tta):
    volume, net = ct(), SmallConv()
    weights = np.array([0.0, 1.0, 2.0, 0.5, 3.0])
    ref_labels, ref_unc, ref_score, ref_per_class = old_path(net, volume, window, weights, tta)
    calls = []
    labels, unc, score, per_class = predict_with_uncertainty_bounded(
        net, volume, preprocess=preprocess, window=window, class_weights=weights, tta=tta, device="cpu",
        progress=lambda done, total: calls.append((done, total)))
    assert labels.same_grid(volume) and labels.array.dtype == np.uint8 and unc.dtype == np.float16
    assert (labels.array == ref_labels.array).mean() > 0.9999
    assert len(np.unique(labels.array)) >= 2 and per_class  # organs predicted, not all background
    np.testing.assert_allclose(unc.astype(np.float32), ref_unc.astype(np.float32), atol=2e-3)
    assert score == pytest.approx(ref_score, abs=1e-5)
    assert per_class.keys() == ref_per_class.keys()
    for c in per_class:
        assert per_class[c] == pytest.approx(ref_per_class[c], abs=1e-5)
    assert calls[0] == (0, calls[-1][1]) and calls[-1][0] == calls[-1][1] > 0
    assert np.all(labels.array[~body_mask(volume.array)] == 0) and np.all(unc[~body_mask(volume.array)] == 0)


def test_slabs_arrive_in_order_and_match_full_probabilities():
    volume, net = ct((21, 12, 30)), SmallConv()  # y shorter than the window: padded and cropped back
    image = preprocess(volume.array)
    ref = sliding_window_probs(net, image, window=(6, 16, 16), device="cpu")
    got, starts = [], []

    def sink(z0, probs):
        starts.append(z0)
        got.append(probs.clone())

    classes = stream_probabilities(net, image, window=(6, 16, 16), on_slab=sink, device="cpu")
    assert classes == C
    full = torch.cat(got, dim=1)
    assert full.shape == ref.shape
    assert starts == sorted(starts) and starts[0] == 0
    torch.testing.assert_close(full, ref, atol=1e-5, rtol=1e-5)


def test_accumulator_is_one_window_deep_whatever_the_depth(monkeypatch):
    """Memory is bounded by the window, not the number of slices: no tensor with the volume's depth."""
    net, window = SmallConv(), (8, 16, 16)
    biggest = []
    real_zeros = torch.zeros

    def zeros(*shape, **kw):
        out = real_zeros(*shape, **kw)
        biggest.append(out.numel())
        return out

    monkeypatch.setattr(torch, "zeros", zeros)
    sink = SlabUncertainty((120, 16, 16))
    stream_probabilities(net, np.zeros((120, 16, 16), np.float32), window=window, on_slab=sink, device="cpu")
    assert sink.filled == 120
    assert max(biggest) <= C * 8 * 16 * 16  # (C, wz, Y, X), not (C, 120, Y, X)


def test_all_air_and_cancel():
    net = SmallConv()
    air = Volume(np.full((10, 20, 20), -1000.0, np.float32), (1.0, 1.0, 1.0), modality="CT")
    labels, unc, score, per_class = predict_with_uncertainty_bounded(net, air, preprocess=preprocess,
                                                                     window=(8, 16, 16), device="cpu")
    assert not labels.array.any() and not unc.any() and per_class == {}
    assert 0.0 <= score <= 1.0
    with pytest.raises(InferenceCancelled):
        predict_with_uncertainty_bounded(net, ct(), preprocess=preprocess, window=(8, 16, 16), device="cpu",
                                         cancel=lambda: True)


def test_labels_only_prediction_streams_too(monkeypatch):
    """`dinomix predict` (labels only): the argmax of the full probabilities, with no tensor as
    deep as the volume: the whole-volume accumulator is never built."""
    from dinomix_core.engine import inferer

    net, window = SmallConv(), (8, 16, 16)
    volume = ct((60, 40, 44))
    body = body_mask(np.asarray(volume.array))
    reference = sliding_window_probs(net, preprocess(volume.array), window=window, overlap=0.5, sw_batch_size=2,
                                     device="cpu", skip_mask=body).argmax(0).numpy()
    reference[~body] = 0

    def refuse(*a, **k):
        raise AssertionError("the whole-volume accumulator was built")

    monkeypatch.setattr(inferer, "_accumulate", refuse)
    deepest = []
    real_zeros = torch.zeros

    def zeros(*shape, **kw):
        out = real_zeros(*shape, **kw)
        deepest.append(out.shape[-3] if out.dim() >= 3 else 0)
        return out

    monkeypatch.setattr(torch, "zeros", zeros)
    labels = predict_volume(net, volume, preprocess=preprocess, window=window, overlap=0.5, sw_batch_size=2,
                            device="cpu")
    assert labels.array.dtype == np.uint8 and labels.same_grid(volume)
    assert (labels.array == reference).mean() > 0.999  # equal but for float-rounding ties
    assert max(deepest) <= window[0]
