"""Intensity windows and normalisation for CT in HU (arrays of any shape, usually (z, y, x))."""

from __future__ import annotations

import numpy as np

# (width, level) in HU, as in 3D Slicer's CT presets.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "abdomen": (350.0, 40.0),
    "bone": (1000.0, 400.0),
    "lung": (1400.0, -500.0),
    "soft_tissue": (400.0, 40.0),
    "brain": (100.0, 50.0),
}

# The DHC protocol (Wang & Li, MICCAI 2023) clips abdominal CT to this HU range before scaling.
DHC_CLIP_HU = (-75.0, 275.0)


def window_bounds(preset: str | tuple[float, float]) -> tuple[float, float]:
    """(low, high) HU of a preset name (``"abdomen"``, ``"Soft tissue"``...) or (width, level)."""
    if isinstance(preset, str):
        key = preset.strip().lower().replace(" ", "_").replace("-", "_")
        if key not in WINDOW_PRESETS:
            raise KeyError(f"unknown window preset {preset!r}; use one of {', '.join(WINDOW_PRESETS)} or (width, level)")
        width, level = WINDOW_PRESETS[key]
    else:
        width, level = (float(v) for v in preset)
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    return level - width / 2.0, level + width / 2.0


def window(array_hu: np.ndarray, preset: str | tuple[float, float]) -> np.ndarray:
    """Map HU through a display window to float32 in [0, 1] (below low -> 0, above high -> 1)."""
    low, high = window_bounds(preset)
    return clip_normalize(array_hu, low, high)


def clip_normalize(array: np.ndarray, lo: float = DHC_CLIP_HU[0], hi: float = DHC_CLIP_HU[1]) -> np.ndarray:
    """Clip to [lo, hi] and scale linearly to float32 [0, 1] (default: the DHC clip, HU)."""
    if hi <= lo:
        raise ValueError(f"clip range needs lo < hi, got [{lo}, {hi}]")
    out = np.array(array, dtype=np.float32, copy=True)  # never modify the caller's array
    np.clip(out, lo, hi, out=out)
    out -= np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    return out


def zscore(array: np.ndarray, mask: np.ndarray | None = None, *, eps: float = 1e-8) -> np.ndarray:
    """float32 (x - mean) / std, statistics taken inside ``mask`` (e.g. the body) when given."""
    values = np.asarray(array)
    sample = values[mask.astype(bool)] if mask is not None else values
    if sample.size == 0:
        raise ValueError("z-score mask selects no voxels")
    mean = float(sample.mean(dtype=np.float64))
    std = float(sample.std(dtype=np.float64))
    out = values.astype(np.float32)
    out -= np.float32(mean)
    out /= np.float32(max(std, eps))
    return out
