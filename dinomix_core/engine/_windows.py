"""Window grid and Gaussian blending weights for sliding-window inference.

Everything here works in voxel units on (z, y, x) arrays. The grid rule is the one of the
published evaluations (DHC, MONAI): along each axis the windows start every
``int(window * (1 - overlap))`` voxels and the last one is pulled back to end at the border,
so a network evaluated with our inferer sees exactly the windows it saw in those papers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product
from typing import Iterator, Sequence

import numpy as np
import torch

Triple = tuple[int, int, int]


def as_triple(value: int | Sequence[int], name: str) -> Triple:
    """One int per axis (z, y, x); a single int means a cube."""
    values = (value,) * 3 if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != 3 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in values):
        raise ValueError(f"{name} must be a positive int or three positive ints (z, y, x), got {value!r}")
    return tuple(int(v) for v in values)


def overlap_triple(overlap: float | Sequence[float]) -> tuple[float, float, float]:
    """Overlap fraction per axis, each in [0, 1)."""
    values = (overlap,) * 3 if isinstance(overlap, (int, float)) else tuple(overlap)
    if len(values) != 3 or not all(0.0 <= float(o) < 1.0 for o in values):
        raise ValueError(f"overlap must be a fraction in [0, 1) or three of them (z, y, x), got {overlap!r}")
    return tuple(float(o) for o in values)


def axis_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start indices of the windows along one axis of ``size`` voxels (``size >= window``).

    Windows step ``int(window * (1 - overlap))`` voxels (at least 1); the last start is
    clipped to ``size - window`` so every voxel is covered and no window leaves the volume.
    """
    if size < window:
        raise ValueError(f"axis of {size} voxels is smaller than the window ({window}); pad it first")
    if size == window:
        return [0]
    step = max(1, int(window * (1.0 - overlap)))
    count = math.ceil((size - window) / step) + 1
    return [min(i * step, size - window) for i in range(count)]


@dataclass(frozen=True)
class WindowGrid:
    """All windows of size ``window`` over a volume of ``shape`` (both (z, y, x), voxels)."""

    shape: Triple
    window: Triple
    starts: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]

    @classmethod
    def build(cls, shape: Sequence[int], window: Sequence[int], overlap: Sequence[float]) -> "WindowGrid":
        starts = tuple(tuple(axis_starts(s, w, o)) for s, w, o in zip(shape, window, overlap))
        return cls(tuple(int(s) for s in shape), tuple(window), starts)

    def __len__(self) -> int:
        return len(self.starts[0]) * len(self.starts[1]) * len(self.starts[2])

    def corners(self) -> Iterator[Triple]:
        """Window start corners (z, y, x), z slowest."""
        return iter(product(*self.starts))

    def slices(self, corner: Triple) -> tuple[slice, slice, slice]:
        return tuple(slice(c, c + w) for c, w in zip(corner, self.window))


def gaussian_importance(
    window: Sequence[int],
    sigma_scale: float = 0.125,
    floor: float = 1e-3,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Blending weights for one window: a separable Gaussian of shape ``window`` (z, y, x).

    exp(-d^2 / (2 sigma^2)) per axis, d measured from the window's centre (between the two
    middle voxels for even lengths, so the peak is 1 only for odd windows), sigma =
    ``sigma_scale`` times the window length: predictions near a window's border, where the
    network saw the least context, count least. Weights below ``floor`` are raised to it, so
    every voxel keeps a usable weight (also in float16 accumulators). Same numbers as MONAI's
    Gaussian mode, hence the same blend.
    """
    if sigma_scale <= 0:
        raise ValueError(f"sigma_scale must be positive, got {sigma_scale}")
    weights = torch.ones((), dtype=torch.float64)
    for axis, n in enumerate(window):
        offsets = torch.arange(n, dtype=torch.float64) - (n - 1) / 2.0
        sigma = sigma_scale * n
        g = torch.exp(-0.5 * (offsets / sigma) ** 2)
        shape = [1, 1, 1]
        shape[axis] = n
        weights = weights * g.reshape(shape)
    return weights.clamp_(min=floor).to(device=device, dtype=torch.float32)


def pad_amounts(shape: Sequence[int], window: Sequence[int]) -> list[tuple[int, int]]:
    """(before, after) padding per axis that makes every axis at least the window long."""
    out = []
    for s, w in zip(shape, window):
        total = max(w - s, 0)
        out.append((total // 2, total - total // 2))
    return out


def windows_touching(mask: np.ndarray, grid: WindowGrid) -> list[bool]:
    """For each window of ``grid`` (in ``corners()`` order): does it hold any True voxel?"""
    if tuple(mask.shape) != grid.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the volume {grid.shape}")
    # Projecting to per-(z-start) slabs first keeps this a few passes over the mask.
    out = []
    for z in grid.starts[0]:
        slab = mask[z : z + grid.window[0]].any(axis=0)  # (y, x)
        for y in grid.starts[1]:
            rows = slab[y : y + grid.window[1]].any(axis=0)  # (x,)
            out.extend(bool(rows[x : x + grid.window[2]].any()) for x in grid.starts[2])
    return out
