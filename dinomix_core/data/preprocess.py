"""Intensity preprocessing for the two networks that look at a CT volume.

The student sees the DHC protocol (clip to [-75, 275] HU, min-max to [0, 1]) so published
baselines stay comparable. The frozen DINOv3 teacher sees what it was trained on: natural
RGB-like images, so each axial slice is windowed (abdomen W350/L40), repeated to 3 channels,
ImageNet-normalised and resized so that one 16-px ViT patch covers exactly ``stride`` x
``stride`` voxels in-plane. That exactness is what lets patches crop, flip and mix cached
tokens with the same integer arithmetic as the image.

Token stride trades token resolution against teacher cost: the teacher's work per slice grows
with (16 / stride)^2 (and attention with its square). 8 (the default) gives one token per
8 x 8 voxels at 4x the pixels of the native slice; 4 resolves small organs (adrenal glands,
gallbladder) better and is practical on a GPU; 16 is cheapest (native resolution).

All arrays are indexed (z, y, x); HU in, unitless out. The in-plane padding needed to reach a
multiple of ``stride`` is always added at the high end of y and x (with air, -1000 HU), so
token cell (i, j) covers voxels [i*stride, (i+1)*stride) x [j*stride, (j+1)*stride) of the
unpadded volume: token maps stay aligned with voxel (0, 0).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from dinomix_core.io import clip_normalize, window as window_hu

#: DHC clip for the student, HU (lo, hi).
STUDENT_CLIP_HU: tuple[float, float] = (-75.0, 275.0)
#: Abdomen window for the teacher, HU (width, level) as in 3D Slicer's preset.
TEACHER_WINDOW: tuple[float, float] = (350.0, 40.0)
#: Voxels per token edge in-plane; see the module docstring for the trade-off.
DEFAULT_STRIDE = 8
#: The DINOv3 ViT patch edge in pixels.
VIT_PATCH = 16
#: Value used to pad CT in-plane: air.
AIR_HU = -1000.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Bumped whenever ``teacher_slices`` changes its output, so cached tokens are recomputed.
TEACHER_PREPROCESS_VERSION = 1


def student_intensity(image_hu: np.ndarray, clip: tuple[float, float] = STUDENT_CLIP_HU) -> np.ndarray:
    """Student input: (z, y, x) HU -> float32 in [0, 1] (clip to ``clip`` HU, min-max scale)."""
    lo, hi = (float(c) for c in clip)
    if not hi > lo:
        raise ValueError(f"student clip needs lo < hi, got {clip}")
    return np.asarray(clip_normalize(np.asarray(image_hu), lo=lo, hi=hi), dtype=np.float32)


def check_stride(stride: int) -> int:
    """Validate a token stride (voxels per token edge, positive integer)."""
    if isinstance(stride, bool) or int(stride) != stride or int(stride) < 1:
        raise ValueError(f"token stride must be a positive integer number of voxels, got {stride!r}")
    return int(stride)


def token_grid(shape_yx: tuple[int, int], stride: int) -> tuple[int, int]:
    """Token grid (h, w) of one axial slice of ``shape_yx`` voxels: (ceil(Y/stride), ceil(X/stride))."""
    stride = check_stride(stride)
    y, x = (int(s) for s in shape_yx)
    return math.ceil(y / stride), math.ceil(x / stride)


def inplane_padding(shape_yx: tuple[int, int], stride: int) -> tuple[int, int]:
    """Voxels of air added at the high end of (y, x) to reach a multiple of ``stride``."""
    h, w = token_grid(shape_yx, stride)
    return h * stride - int(shape_yx[0]), w * stride - int(shape_yx[1])


def teacher_slices(
    image_hu: np.ndarray | torch.Tensor,
    *,
    window: tuple[float, float] = TEACHER_WINDOW,
    stride: int = DEFAULT_STRIDE,
    device: torch.device | str | None = None,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """Teacher input for every axial slice of ``image_hu`` (z, y, x in HU).

    Returns float32 (z, 3, h*16, w*16) with (h, w) = ``token_grid((y, x), stride)``: windowed
    with ``window`` = (width, level) HU, repeated to 3 channels, normalised with ``mean`` /
    ``std`` (ImageNet unless the teacher's weights say otherwise), the
    volume padded in-plane with air at the high end (see ``inplane_padding``) and resized
    (bilinear, antialiased) by 16 / stride, so ViT patch (i, j) sees exactly voxels
    [i*stride, (i+1)*stride) x [j*stride, (j+1)*stride). Work happens on ``device``
    (default: the tensor's device, or CPU for numpy input); call it on slice ranges of a large
    volume to bound memory.
    """
    stride = check_stride(stride)
    width, level = (float(v) for v in window)
    if not width > 0:
        raise ValueError(f"teacher window width must be positive, got {window}")
    if image_hu.ndim != 3:
        raise ValueError(f"teacher_slices needs a (z, y, x) volume, got shape {tuple(image_hu.shape)}")
    pad_y, pad_x = inplane_padding(image_hu.shape[1:], stride)
    array = image_hu.detach().cpu().numpy() if isinstance(image_hu, torch.Tensor) else np.asarray(image_hu)
    if device is None:
        device = image_hu.device if isinstance(image_hu, torch.Tensor) else "cpu"
    if pad_y or pad_x:
        array = np.pad(array, ((0, 0), (0, pad_y), (0, pad_x)), mode="constant", constant_values=AIR_HU)
    scaled = torch.from_numpy(np.ascontiguousarray(window_hu(array, (width, level)), dtype=np.float32))
    scaled = scaled.to(device).unsqueeze(1)  # (z, 1, Y, X)
    if stride != VIT_PATCH:
        size = (scaled.shape[-2] * VIT_PATCH // stride, scaled.shape[-1] * VIT_PATCH // stride)
        scaled = F.interpolate(scaled, size=size, mode="bilinear", align_corners=False, antialias=True)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=scaled.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=scaled.device).view(1, 3, 1, 1)
    return (scaled.expand(-1, 3, -1, -1) - mean_t) / std_t
