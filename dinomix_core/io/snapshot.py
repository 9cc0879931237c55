"""PNG snapshots of a CT slice with its label overlay, for reports and a quick look."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dinomix_core.io.atomic import atomic_path
from dinomix_core.io.labelmap import LabelMap
from dinomix_core.io.windowing import window


def overlay_rgb(slice_hu: np.ndarray, labels: np.ndarray, labelmap: LabelMap, *, window_wl=(350.0, 40.0), alpha: float = 0.45,
                contour_only: bool = False) -> np.ndarray:
    """RGB uint8 (y, x, 3) of one axial slice (y, x) in HU, windowed, with labels blended in their colours."""
    gray = (window(slice_hu.astype(np.float32), window_wl) * 255).astype(np.float32)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    colours = np.zeros((max(int(labels.max()) + 1, labelmap.num_classes), 3), np.float32)
    for value, (r, g, b) in enumerate(labelmap.colors):
        if value < len(colours):
            colours[value] = (r, g, b)
    mask = labels > 0
    if contour_only:
        inner = np.zeros_like(mask)
        inner[1:-1, 1:-1] = (labels[1:-1, 1:-1] == labels[:-2, 1:-1]) & (labels[1:-1, 1:-1] == labels[2:, 1:-1]) & \
                            (labels[1:-1, 1:-1] == labels[1:-1, :-2]) & (labels[1:-1, 1:-1] == labels[1:-1, 2:])
        mask &= ~inner
        rgb[mask] = colours[labels[mask]]
    else:
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colours[labels[mask]]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def save_overlay_png(path: str | Path, panels: list[np.ndarray], *, scale: int = 3) -> Path:
    """Write RGB panels (each (y, x, 3) uint8) side by side as one PNG, atomically; nearest upscaling."""
    from PIL import Image

    height = max(p.shape[0] for p in panels)
    gap = np.full((height, 4, 3), 255, np.uint8)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0))) for p in panels]
    row = np.concatenate([x for p in padded for x in (p, gap)][:-1], axis=1)
    image = Image.fromarray(row).resize((row.shape[1] * scale, row.shape[0] * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
