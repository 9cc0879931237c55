"""Augmentation that moves image, label and teacher tokens together.

Geometry is applied identically to all three, so a voxel's cached DINOv3 token is still the
token of that voxel afterwards:

* flips along z / y / x: the patch's H and W are multiples of the token stride, so a flip
  maps token cells exactly onto token cells (image y -> H-1-y sends cell y//s to h-1-y//s);
* one small in-plane rotation + isotropic scale per sample, as a single ``affine_grid`` theta
  in normalised coordinates (``align_corners=False``). Normalised coordinates span the patch
  at any resolution, so the same theta resamples the image (trilinear), the label (nearest)
  and the token grid (bilinear, then re-L2-normalised; zero padding tokens stay zero).

Intensity changes (gamma, contrast, brightness, Gaussian noise) touch the image only.

Tensors are batched: image (B, 1, D, H, W), label (B, D, H, W) integer, tokens
(B, C, D, h, w); axis order (z, y, x). Random parameters are drawn on the CPU from the given
generator, so the result is the same on CPU and CUDA for a given seed; the work itself runs
on the tensors' device.

Flipping x mirrors patient left and right, so "left kidney" appears on the right; pass
``flips=("z", "y")`` where lateralised classes must stay distinguishable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

_AXES = {"z": 0, "y": 1, "x": 2}


@dataclass(frozen=True)
class IntensityAug:
    """Image-only intensity changes on the [0, 1] student input; each applied with its own probability."""

    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    p_contrast: float = 0.5
    contrast: tuple[float, float] = (0.75, 1.25)
    p_brightness: float = 0.5
    brightness: tuple[float, float] = (-0.1, 0.1)
    p_noise: float = 0.2
    noise_std: tuple[float, float] = (0.0, 0.05)


def augment_pair(
    sample: dict,
    rng: np.random.Generator | torch.Generator,
    *,
    flips: bool | Iterable[str | int] = True,
    rot_deg: float = 10.0,
    scale: tuple[float, float] = (0.9, 1.1),
    intensity: bool | IntensityAug = True,
) -> dict:
    """Augment one patch: image (1, D, H, W), label (D, H, W) | None, tokens (C, D, h, w) | None.

    Numpy arrays are accepted and come back as torch tensors. Other keys pass through.
    """
    batch = {}
    for key in ("image", "label", "tokens"):
        value = sample.get(key)
        batch[key] = None if value is None else torch.as_tensor(value).unsqueeze(0)
    out = augment_batch(batch, rng, flips=flips, rot_deg=rot_deg, scale=scale, intensity=intensity)
    result = dict(sample)
    for key in ("image", "label", "tokens"):
        result[key] = None if out[key] is None else out[key][0]
    return result


def augment_batch(
    batch: dict,
    generator: np.random.Generator | torch.Generator,
    *,
    flips: bool | Iterable[str | int] = True,
    rot_deg: float = 10.0,
    scale: tuple[float, float] = (0.9, 1.1),
    intensity: bool | IntensityAug = True,
) -> dict:
    """Augment a batch {image (B,1,D,H,W), label (B,D,H,W) | None, tokens (B,C,D,h,w) | None}.

    Each sample gets its own flips, rotation (uniform in +-``rot_deg`` degrees about z),
    scale (uniform in ``scale``) and intensity changes. Returns a new dict; other keys pass
    through unchanged.
    """
    gen = _torch_generator(generator)
    image = batch["image"]
    label = batch.get("label")
    tokens = batch.get("tokens")
    if image.ndim != 5 or image.shape[1] != 1:
        raise ValueError(f"augment_batch needs image (B, 1, D, H, W), got {tuple(image.shape)}")
    b, _, d, h, w = image.shape
    if label is not None and tuple(label.shape) != (b, d, h, w):
        raise ValueError(f"label {tuple(label.shape)} does not match image {tuple(image.shape)}")
    if tokens is not None:
        if tokens.ndim != 5 or tokens.shape[0] != b or tokens.shape[2] != d:
            raise ValueError(f"tokens {tuple(tokens.shape)} do not match image {tuple(image.shape)}")
        th, tw = tokens.shape[-2:]
        if h % th or w % tw or h // th != w // tw:
            raise ValueError(f"token grid {(th, tw)} is not an integer stride of the patch {(h, w)}")

    flip_axes = _flip_axes(flips)
    flip_draw = torch.rand((b, 3), generator=gen) < 0.5
    angles = (torch.rand(b, generator=gen, dtype=torch.float64) * 2 - 1) * math.radians(float(rot_deg))
    lo, hi = (float(v) for v in scale)
    scales = lo + torch.rand(b, generator=gen, dtype=torch.float64) * (hi - lo)
    intensity_params = _draw_intensity(b, gen, intensity)

    image, label, tokens = image.float(), label, None if tokens is None else tokens.float()
    if flip_axes:
        image, label, tokens = _flip(image, label, tokens, flip_draw, flip_axes)
    if float(rot_deg) != 0.0 or lo != 1.0 or hi != 1.0:
        theta = inplane_theta(angles, scales, (h, w)).to(image.device, torch.float32)
        image, label, tokens = apply_affine(image, label, tokens, theta)
    if intensity_params is not None:
        image = _apply_intensity(image, intensity_params)

    out = dict(batch)
    out.update(image=image, label=label, tokens=tokens)
    return out


def inplane_theta(angles: torch.Tensor, scales: torch.Tensor, size_yx: tuple[int, int]) -> torch.Tensor:
    """(B, 3, 4) ``affine_grid`` thetas: rotate by ``angles`` (rad) about z and zoom by ``scales``.

    The rotation is rigid in voxel space (not in normalised space, which would shear a
    non-square patch): with N = diag(2/W, 2/H), theta = N (R / scale) N^-1 in (x, y); z maps
    to itself.
    """
    h, w = (float(v) for v in size_yx)
    cos, sin = torch.cos(angles) / scales, torch.sin(angles) / scales
    theta = torch.zeros((angles.shape[0], 3, 4), dtype=angles.dtype)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * h / w
    theta[:, 1, 0] = sin * w / h
    theta[:, 1, 1] = cos
    theta[:, 2, 2] = 1.0
    return theta


def apply_affine(
    image: torch.Tensor,
    label: torch.Tensor | None,
    tokens: torch.Tensor | None,
    theta: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Resample image (trilinear), label (nearest) and tokens (trilinear on their grid,
    re-normalised) with the same normalised-coordinate ``theta`` (B, 3, 4); outside is 0."""
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    image = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if label is not None:
        moved = F.grid_sample(label.unsqueeze(1).float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
        label = moved.squeeze(1).round().to(label.dtype)
    if tokens is not None:
        token_grid = F.affine_grid(theta, list(tokens.shape), align_corners=False)
        tokens = F.grid_sample(tokens, token_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        norm = tokens.norm(dim=1, keepdim=True)
        tokens = torch.where(norm > 1e-6, tokens / norm.clamp_min(1e-6), torch.zeros_like(tokens))
    return image, label, tokens


def _flip(image, label, tokens, draw: torch.Tensor, axes: Sequence[int]):
    image, tokens = image.clone(), None if tokens is None else tokens.clone()
    label = None if label is None else label.clone()
    for i in range(image.shape[0]):
        dims = [a for a in axes if bool(draw[i, a])]
        if not dims:
            continue
        image[i] = torch.flip(image[i], [1 + a for a in dims])
        if label is not None:
            label[i] = torch.flip(label[i], dims)
        if tokens is not None:
            tokens[i] = torch.flip(tokens[i], [1 + a for a in dims])
    return image, label, tokens


def _flip_axes(flips) -> tuple[int, ...]:
    if flips is True:
        return (0, 1, 2)
    if flips is False or flips is None:
        return ()
    axes = []
    for axis in flips:
        index = _AXES.get(axis, axis) if isinstance(axis, str) else int(axis)
        if index not in (0, 1, 2):
            raise ValueError(f"flip axis must be one of z, y, x (or 0, 1, 2), got {axis!r}")
        axes.append(index)
    return tuple(sorted(set(axes)))


def _draw_intensity(b: int, gen: torch.Generator, intensity) -> dict | None:
    if intensity is False or intensity is None:
        return None
    cfg = IntensityAug() if intensity is True else intensity

    def draw(p: float, rng: tuple[float, float], neutral: float) -> torch.Tensor:
        apply = torch.rand(b, generator=gen) < p
        value = rng[0] + torch.rand(b, generator=gen) * (rng[1] - rng[0])
        return torch.where(apply, value, torch.full_like(value, neutral))

    return {
        "gamma": draw(cfg.p_gamma, cfg.gamma, 1.0),
        "contrast": draw(cfg.p_contrast, cfg.contrast, 1.0),
        "brightness": draw(cfg.p_brightness, cfg.brightness, 0.0),
        "noise": draw(cfg.p_noise, cfg.noise_std, 0.0),
        "noise_seed": torch.randint(0, 2**62, (1,), generator=gen).item(),
    }


def _apply_intensity(image: torch.Tensor, params: dict) -> torch.Tensor:
    shape = (-1, 1, 1, 1, 1)
    dev = image.device
    gamma = params["gamma"].to(dev).view(shape)
    contrast = params["contrast"].to(dev).view(shape)
    brightness = params["brightness"].to(dev).view(shape)
    noise = params["noise"].to(dev).view(shape)
    image = image.clamp(0.0, 1.0) ** gamma
    mean = image.mean(dim=(1, 2, 3, 4), keepdim=True)
    image = (image - mean) * contrast + mean + brightness
    if bool((params["noise"] > 0).any()):
        # Noise drawn on the CPU from its own seed: identical on every device.
        noise_gen = torch.Generator().manual_seed(int(params["noise_seed"]))
        image = image + torch.randn(image.shape, generator=noise_gen).to(dev) * noise
    return image


def _torch_generator(rng) -> torch.Generator:
    if isinstance(rng, torch.Generator):
        if rng.device.type != "cpu":
            raise ValueError("augmentation draws its parameters on the CPU: pass a CPU torch.Generator")
        return rng
    if isinstance(rng, np.random.Generator):
        return torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    raise TypeError(f"expected a numpy or torch random generator, got {type(rng).__name__}")
