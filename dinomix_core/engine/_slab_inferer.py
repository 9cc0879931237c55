"""Sliding-window probabilities in bounded memory: finished z-slabs are handed on, then dropped.

``inferer._accumulate`` keeps one C x Z x Y x X accumulator for the whole volume (4.4 GB in
float32 for a 512x512x300 CT with 14 classes) and normalising it into probabilities makes a
second one. Both are needed only because every voxel waits for its last window. Windows
come in z-rows (all windows sharing one z start, ``WindowGrid.corners`` is z-slowest), so
once every window of the rows starting at or before z0 has been added, no later window
touches the slices below the next row's start: they are final. This module keeps a rolling
accumulator one window deep in z (C x wz x Yp x Xp, e.g. 0.9 GB for a 64x128x128 window on
512x512 slices, whatever the number of slices), normalises each finished slab and calls
``on_slab(z0, probs)`` with (C, dz, Y, X) float32 probabilities on the CPU, z0 counted in
the input's (z, y, x) voxels (padding already cropped).

The blend is the one of ``inferer.sliding_window_probs`` (same grid, Gaussian weights,
skipped windows counted as certain background, TTA, cancel and progress); only the order in
which a voxel's window terms are summed differs, so probabilities agree to float rounding.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dinomix_core.engine import inferer as _inf
from dinomix_core.engine._argmax import class_argmax
from dinomix_core.engine._windows import (
    WindowGrid,
    as_triple,
    gaussian_importance,
    overlap_triple,
    pad_amounts,
    windows_touching,
)

SlabSink = Callable[[int, torch.Tensor], None]

_SLAB = 8  # z-slices normalised and handed on at a time: bounds the finishing temporaries


def stream_probabilities(
    model: nn.Module,
    image: torch.Tensor | np.ndarray,
    *,
    window: int | Sequence[int],
    on_slab: SlabSink,
    overlap: float | Sequence[float] = 0.5,
    sw_batch_size: int = 4,
    device: torch.device | str | None = None,
    amp: bool = True,
    tta_flips: Sequence[int] = (),
    skip_mask: np.ndarray | torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    sigma_scale: float = 0.125,
    pad_value: float | None = None,
    channels_last: bool | None = None,
    precision: str = "auto",
    compile: bool = False,
) -> int:
    """Run ``model`` over ``image`` (z, y, x voxels) and give ``on_slab`` every z-slab once, in order.

    Options are those of :func:`inferer.sliding_window_probs`. ``on_slab(z0, probs)`` gets
    (C, dz, Y, X) float32 CPU probabilities for input slices z0 .. z0 + dz - 1, z0 rising
    from 0 to Z without gap. Returns the number of classes C. Peak memory besides the image
    and the network: C x wz x Yp x Xp float32 (+ one float32 weight slab), wz the window's
    z length and Yp, Xp the in-plane size after padding to the window.
    """
    image = _inf._as_image(image)
    spatial = tuple(image.shape[1:])
    window = as_triple(window, "window")
    overlaps = overlap_triple(overlap)
    if not isinstance(sw_batch_size, int) or sw_batch_size < 1:
        raise ValueError(f"sw_batch_size must be a positive int, got {sw_batch_size!r}")
    flips = _inf._flip_sets(tta_flips)
    device = torch.device(device) if device is not None else _inf._default_device()
    if channels_last is None:
        channels_last = device.type == "cpu"
    mask = _inf._as_mask(skip_mask, spatial)

    pads = pad_amounts(spatial, window)
    if any(before or after for before, after in pads):
        fill = float(image.min()) if pad_value is None else float(pad_value)
        image = F.pad(image, [amount for pair in reversed(pads) for amount in pair], value=fill)
        if mask is not None:
            mask = np.pad(mask, pads, constant_values=False)
    padded = tuple(image.shape[1:])
    crop = tuple(slice(before, before + size) for (before, _), size in zip(pads, spatial))
    if device.type == "cuda" and _inf._fits_on_gpu(image, device):
        image = image.to(device)

    grid = WindowGrid.build(padded, window, overlaps)
    corners = list(grid.corners())
    runs = [True] * len(corners) if mask is None else windows_touching(mask, grid)
    rows: dict[int, list[tuple[tuple[int, int, int], bool]]] = {}
    for corner, run in zip(corners, runs):
        rows.setdefault(corner[0], []).append((corner, run))
    total = sum(runs)
    weight = gaussian_importance(window, sigma_scale, device=device)
    autocast = _inf._autocast(device, amp, precision)
    depth = window[0]
    state = _Rolling(depth, padded, crop, on_slab)

    with _inf._prepared(model, device, channels_last, compile) as net, torch.inference_mode():
        if progress is not None:
            progress(0, total)
        done = 0
        for z_start in sorted(rows):
            state.advance_to(z_start)
            row = rows[z_start]
            to_run = [c for c, run in row if run]
            for first in range(0, len(to_run), sw_batch_size):
                if cancel is not None and cancel():
                    raise _inf.InferenceCancelled(f"inference cancelled after {done} of {total} windows")
                batch = to_run[first : first + sw_batch_size]
                x = torch.stack([image[(slice(None), *grid.slices(c))] for c in batch]).to(device, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last_3d)
                probs = _inf._softmax_tta(net, x, flips, autocast)
                state.ensure(probs.shape[1], device)
                probs = probs.mul_(weight).to(state.scores.device)
                for i, corner in enumerate(batch):
                    state.add(corner, grid, probs[i], weight)
                done += len(batch)
                if progress is not None:
                    progress(done, total)
            skipped = [c for c, run in row if not run]
            if skipped and state.scores is None:
                state.ensure(_inf._count_classes(net, image, grid, device, autocast), device)
            for corner in skipped:  # certain background, blended like any other window
                state.add(corner, grid, None, weight)
        state.advance_to(padded[0])
    return state.classes


def stream_labels(model: nn.Module, image: torch.Tensor | np.ndarray, *, window: int | Sequence[int],
                  accumulate_dtype: torch.dtype = torch.float32, accumulate_device=None, **options) -> np.ndarray:
    """Argmax labels (z, y, x voxels) of the blended probabilities, slab by slab.

    Options are those of :func:`stream_probabilities`; the only full-size array is the uint8
    result (uint16 above 256 classes). ``accumulate_dtype`` / ``accumulate_device`` belong to
    the whole-volume accumulator of ``inferer.sliding_window_probs`` and are only checked
    here: the rolling accumulator is float32 whatever they say, and never larger than one
    window in z.
    """
    if accumulate_dtype not in (torch.float32, torch.float16, torch.float64):
        raise ValueError(f"accumulate_dtype must be torch.float32, float16 or float64, got {accumulate_dtype}")
    image = _inf._as_image(image)
    out: list[np.ndarray] = []

    def sink(z0: int, probs: torch.Tensor) -> None:
        if not out:
            out.append(np.empty(tuple(image.shape[1:]), dtype=_inf._label_dtype(probs.shape[0])))
        out[0][z0 : z0 + probs.shape[1]] = class_argmax(probs).numpy()

    stream_probabilities(model, image, window=window, on_slab=sink, **options)
    return out[0]


class _Rolling:
    """The window-deep accumulator: rows of padded z in ``[base, base + depth)``."""

    def __init__(self, depth: int, padded: tuple[int, int, int], crop, on_slab: SlabSink):
        self.depth, self.padded, self.crop, self.on_slab = depth, padded, crop, on_slab
        self.base = 0
        self.scores: torch.Tensor | None = None
        self.weights: torch.Tensor | None = None
        self.classes = 0

    def ensure(self, classes: int, device: torch.device) -> None:
        if self.scores is not None:
            return
        shape = (self.depth, *self.padded[1:])
        where = _inf._accumulator_device(device, None, classes, shape, torch.float32)
        self.scores = torch.zeros((classes, *shape), dtype=torch.float32, device=where)
        self.weights = torch.zeros(shape, dtype=torch.float32, device=where)
        self.classes = classes

    def add(self, corner, grid: WindowGrid, weighted: torch.Tensor | None, weight: torch.Tensor) -> None:
        """Add one window: ``weighted`` = weight * probabilities, or None for certain background."""
        z, ys, xs = grid.slices(corner)
        local = slice(z.start - self.base, z.stop - self.base)
        w = weight.to(self.scores.device)
        if weighted is None:
            self.scores[0, local, ys, xs].add_(w)
        else:
            self.scores[:, local, ys, xs].add_(weighted)
        self.weights[local, ys, xs].add_(w)

    def advance_to(self, z_next: int) -> None:
        """Hand on padded slices ``[base, z_next)`` (no later window reaches them) and shift."""
        step = z_next - self.base
        if step <= 0:
            return
        if self.scores is not None:
            self._finish(self.base, z_next)
            keep = self.depth - step
            for j in range(max(keep, 0)):  # forward copy: slice j + step is read before it is overwritten
                self.scores[:, j] = self.scores[:, j + step]
                self.weights[j] = self.weights[j + step]
            self.scores[:, max(keep, 0):] = 0
            self.weights[max(keep, 0):] = 0
        self.base = z_next

    def _finish(self, start: int, stop: int) -> None:
        zc, yc, xc = self.crop
        lo, hi = max(start, zc.start), min(stop, zc.stop)
        for z0 in range(lo, hi, _SLAB):
            z1 = min(z0 + _SLAB, hi)
            local = slice(z0 - self.base, z1 - self.base)
            slab = self.scores[:, local, yc, xc] / self.weights[local, yc, xc]
            self.on_slab(z0 - zc.start, slab.cpu())
