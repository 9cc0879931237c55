"""Pixel checks for screenshots of the viewer: not blank, and organ colours really drawn."""

from __future__ import annotations

import numpy as np


def class_colours_seen(rgb: np.ndarray, colors, opacity: float, *, min_pixels: int = 30, tolerance: float = 20.0) -> list[int]:
    """Indexes of ``colors`` drawn over a grey CT: pixels p with p - opacity*c grey and within range.

    A labels layer of opacity a blends as p = a*c + (1 - a)*g with g the grey CT value, so
    p - a*c must have three equal channels in [0, (1 - a)*255].
    """
    pixels = np.asarray(rgb)[..., :3].reshape(-1, 3).astype(np.float32)
    seen = []
    for index, color in enumerate(colors):
        rest = pixels - opacity * np.asarray(color, np.float32)
        spread = rest.max(axis=1) - rest.min(axis=1)
        inside = (rest.min(axis=1) >= -tolerance) & (rest.max(axis=1) <= (1 - opacity) * 255 + tolerance)
        colourful = np.ptp(pixels, axis=1) > 25  # grey CT pixels alone never count
        if int((inside & (spread < tolerance) & colourful).sum()) >= min_pixels:
            seen.append(index)
    return seen


def not_blank(rgb: np.ndarray) -> bool:
    return float(np.asarray(rgb)[..., :3].std()) > 5.0
