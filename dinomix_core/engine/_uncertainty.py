"""Labels, per-voxel uncertainty and the case score of a CT, computed slab by slab as inference goes.

The project ranks cases by the entropy of the model's softmax (``project.ranking``), and the
GUI shows it per voxel. Computing both from a finished (C, z, y, x) float32 probability
volume cost two such volumes at once (the inferer's accumulator and the probabilities): for
a 512x512x300 CT with 14 classes about 9 GB. Here every z-slab of probabilities that
:func:`_slab_inferer.stream_probabilities` finishes is reduced at once to what is kept (its
labels, its float16 entropy, per-class entropy sums) and dropped, so the only full-size
arrays are the image, the labels (1 byte per voxel) and the uncertainty map (2 bytes).

The numbers are those of ``ranking.uncertainty_summary`` on the full probabilities and of
the argmax of ``inferer.sliding_window_probs`` (to float rounding of the blend).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from dinomix_core.engine._argmax import class_argmax
from dinomix_core.engine._body import body_mask
from dinomix_core.engine._slab_inferer import stream_probabilities
from dinomix_core.io.volume import Volume
from dinomix_core.project.ranking import _class_weights


class SlabUncertainty:
    """Collects labels (z, y, x) and normalised entropy in [0, 1] (float16) from probability slabs."""

    def __init__(self, shape_zyx: tuple[int, int, int]):
        self.shape = tuple(int(s) for s in shape_zyx)
        self.labels: np.ndarray | None = None
        self.uncertainty = np.empty(self.shape, dtype=np.float16)
        self.sums: np.ndarray | None = None
        self.counts: np.ndarray | None = None
        self.total = 0.0
        self.filled = 0

    def __call__(self, z0: int, probs: torch.Tensor) -> None:
        """Take probabilities (C, dz, y, x) of slices z0 .. z0 + dz - 1."""
        classes = probs.shape[0]
        if self.labels is None:
            self.labels = np.empty(self.shape, dtype=np.uint8 if classes <= 256 else np.uint16)
            self.sums = np.zeros(classes)
            self.counts = np.zeros(classes, dtype=np.int64)
        if z0 != self.filled:
            raise RuntimeError(f"slab at z={z0} arrived out of order (expected z={self.filled})")
        p = probs.float()
        norm = float(np.log(classes))
        entropy = torch.special.xlogy(p, p).sum(dim=0).neg_().div_(norm)
        pred = class_argmax(p)
        dz = p.shape[1]
        self.labels[z0 : z0 + dz] = pred.numpy()
        self.uncertainty[z0 : z0 + dz] = entropy.clamp(0.0, 1.0).numpy()
        flat_pred = pred.numpy().ravel()
        flat = entropy.numpy().ravel().astype(np.float64)
        self.sums += np.bincount(flat_pred, weights=flat, minlength=classes)
        self.counts += np.bincount(flat_pred, minlength=classes)
        self.total += float(flat.sum())
        self.filled = z0 + dz

    def summary(self, class_weights=None) -> tuple[float, dict[int, float]]:
        """``(case score, {class value: mean entropy})``, as ``ranking.uncertainty_summary``."""
        if self.filled != self.shape[0]:
            raise RuntimeError(f"only {self.filled} of {self.shape[0]} slices were predicted")
        classes = self.sums.shape[0]
        per_class = {c: float(self.sums[c] / self.counts[c]) for c in range(1, classes) if self.counts[c] > 0}
        weights = _class_weights(class_weights, classes)
        present = [c for c in per_class if weights[c] > 0]
        if not present:  # no organ predicted: how unsure the model was over the whole volume
            return self.total / max(int(self.counts.sum()), 1), per_class
        w = np.array([weights[c] for c in present])
        h = np.array([per_class[c] for c in present])
        return float((w * h).sum() / w.sum()), per_class


def predict_with_uncertainty_bounded(
    net: nn.Module,
    volume: Volume,
    *,
    preprocess: Callable[[np.ndarray], np.ndarray | torch.Tensor],
    window: int | Sequence[int],
    class_weights=None,
    tta: bool = False,
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    device: torch.device | str | None = None,
    progress=None,
    cancel=None,
    **speed,
):
    """``(labels Volume, float16 uncertainty (z, y, x), score, per-class entropy)`` of one CT.

    ``volume``: (z, y, x), HU for CT; the labels share its exact grid. For a CT, windows
    outside ``body_mask`` are skipped and labels and uncertainty are 0 outside the body; the
    score is computed over the whole volume, as before. ``tta`` mirrors in-plane (y, x).
    ``speed``: ``precision``, ``channels_last``, ``compile`` of :func:`stream_probabilities`.
    """
    hu = np.asarray(volume.array)
    body = body_mask(hu) if (volume.modality or "").upper() == "CT" else None
    image = preprocess(hu)
    if tuple(image.shape) != tuple(hu.shape):
        raise ValueError(f"preprocess changed the volume's shape from {tuple(hu.shape)} to {tuple(image.shape)}")
    sink = SlabUncertainty(hu.shape)
    stream_probabilities(net, image, window=window, on_slab=sink, overlap=overlap, sw_batch_size=sw_batch_size,
                         device=device, tta_flips=(1, 2) if tta else (), skip_mask=body, progress=progress, cancel=cancel,
                         **speed)
    del image
    score, per_class = sink.summary(class_weights)
    labels, uncertainty = sink.labels, sink.uncertainty
    if body is not None:
        outside = ~body
        labels[outside] = 0
        uncertainty[outside] = 0
    return volume.with_array(labels, source=None, modality="labels"), uncertainty, float(score), per_class
