"""Small helpers shared by the method modules (private)."""

from __future__ import annotations

import contextlib

import torch


def float32_region(device: torch.device) -> contextlib.AbstractContextManager:
    """Disable autocast for ``device`` so losses are computed in float32.

    Reductions over ~10^6 voxels and ratios of tiny sums (rare organs) lose too much precision in
    float16/bfloat16; callers still have to ``.float()`` their inputs inside the region.
    """
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()

