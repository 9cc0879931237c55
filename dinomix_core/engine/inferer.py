"""Sliding-window inference: run a 3D student over a whole CT volume, window by window.

A student is trained on patches (e.g. 64x128x128) and cannot take a 512x512x200 volume at
once, so the volume is tiled with overlapping windows (the DHC/MONAI grid, see _windows).
Each window's softmax is weighted by a Gaussian (sigma = 1/8 of the window per axis) that
trusts its centre more than its borders, and the weighted sums are normalised per voxel.

Speed: windows that hold no voxel of ``skip_mask`` (e.g. ``body_mask``: air around the
patient) are never sent through the network; they count as certain background, so voxels
inside the mask get exactly the result of a full run. The network runs in
``torch.inference_mode``. ``precision="auto"`` autocasts on CUDA (bf16, else fp16) and on a
CPU with native bf16 instructions (AVX512-BF16 / AMX); elsewhere it runs float32, because
an AVX2 CPU emulates bf16 convolutions and runs them several times slower (measured,
benchmarks/README.md section 3). ``channels_last`` (default: CPU) runs in channels-last-3d
layout, oneDNN's preferred layout (for the default student on the 2-core AMD EPYC build
machine it cost 7-14% more CPU time, so the product's settings turn it off). ``compile=True`` runs the network through
``torch.compile`` (compiled once per network and process, reused by later calls) and falls
back to eager mode, with one warning, where it cannot compile (no C++ compiler, Triton
blocked in the GUI process, an unsupported op). Windows go through in batches and are added
in place into one accumulator; the Gaussian map is computed once. The settings the product
uses are chosen in ``engine/inference_settings.py``.

Memory (V = padded voxel count, C = classes): the accumulator holds C x V values of
``accumulate_dtype`` (float32: 4 bytes; a 512x512x200 CT with 14 classes is 2.9 GB), plus
V float32 weight sums when probabilities are returned (0.2 GB there). On CUDA it lives on
the GPU when it takes under half of the free GPU memory, else on the CPU (windows are
weighted on the GPU and copied over). ``accumulate_dtype=torch.float16`` halves it; labels
stay the same except at near-ties. ``sliding_window_probs`` also returns C x Z x Y x X
float32 on the CPU. ``predict_labels`` never builds that accumulator: it streams z-slabs
through a window-deep one (``engine/_slab_inferer.py``) and returns one byte per voxel.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from itertools import combinations
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dinomix_core.engine._argmax import class_argmax
from dinomix_core.engine._body import body_mask
from dinomix_core.engine._windows import (
    WindowGrid,
    as_triple,
    gaussian_importance,
    overlap_triple,
    pad_amounts,
    windows_touching,
)
from dinomix_core.engine._runtime import (
    PRECISIONS,
    _accumulator_device,
    _autocast,
    _compiled,
    _default_device,
    _fits_on_gpu,
    _label_dtype,
    cpu_has_native_bf16,
)
from dinomix_core.engine.events import Cancelled
from dinomix_core.io.volume import Volume

__all__ = [
    "InferenceCancelled",
    "PRECISIONS",
    "body_mask",
    "cpu_has_native_bf16",
    "predict_labels",
    "predict_volume",
    "sliding_window_probs",
]

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]

_SLAB = 8  # z-slices finalised at a time: bounds the temporaries of normalise/argmax


class InferenceCancelled(Cancelled):
    """Raised when ``cancel()`` returned True between two window batches; nothing is returned.

    A ``RuntimeError`` (through :class:`~dinomix_core.engine.events.Cancelled`).
    """


def sliding_window_probs(
    model: nn.Module,
    image: torch.Tensor | np.ndarray,
    *,
    window: int | Sequence[int],
    overlap: float | Sequence[float] = 0.5,
    sw_batch_size: int = 4,
    device: torch.device | str | None = None,
    amp: bool = True,
    tta_flips: Sequence[int] = (),
    skip_mask: np.ndarray | torch.Tensor | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    sigma_scale: float = 0.125,
    accumulate_dtype: torch.dtype = torch.float32,
    accumulate_device: torch.device | str | None = None,
    pad_value: float | None = None,
    channels_last: bool | None = None,
    precision: str = "auto",
    compile: bool = False,
) -> torch.Tensor:
    """Per-class probabilities of ``model`` over a whole volume, as (C, Z, Y, X) float32 on CPU.

    ``image``: the preprocessed volume, (Z, Y, X) or (1, Z, Y, X) (channels first), axes
    (z, y, x) in voxels. ``model`` maps (B, 1, D, H, W) to (B, C, D, H, W) logits (a tuple or
    list output uses its first element, the full-resolution head); it is run in eval mode on
    ``device`` (CUDA when present) and restored afterwards (mode, device, layout).

    ``window``: (z, y, x) voxels; axes shorter than it are padded with ``pad_value`` (default:
    the image minimum, i.e. air after any monotone preprocessing) and cropped back.
    ``overlap``: fraction of a window shared with its neighbour, per axis or one for all.
    ``sw_batch_size`` windows go through the network together. ``precision``: "auto" (bf16
    autocast on CUDA, fp16 where bf16 is missing, and on CPUs with native bf16; float32
    otherwise), "float32", "bfloat16" (also on CPUs that emulate it), "float16" (CUDA only);
    ``amp=False`` means "float32" whatever ``precision`` says.
    ``tta_flips``: axes (0=z, 1=y, 2=x) to mirror; every combination of them is run
    (2**k passes) and the softmaxes are averaged.
    ``skip_mask``: bool (Z, Y, X); windows without a True voxel are not run and count as
    background (see ``body_mask``). ``progress(done, total)`` is called with window counts
    (of windows actually run) before the first and after every batch; ``cancel()`` is
    checked before every batch and raises ``InferenceCancelled``.
    ``accumulate_dtype`` / ``accumulate_device``: see the module docstring (memory).
    ``channels_last`` (default: on CPU only) runs the network in channels-last-3d layout.
    ``compile``: run the network through ``torch.compile`` (eager fallback, see the module).
    If every window is skipped, one is still run to learn the number of classes.
    """
    acc = _accumulate(
        model, image, window=window, overlap=overlap, sw_batch_size=sw_batch_size, device=device,
        amp=amp, tta_flips=tta_flips, skip_mask=skip_mask, progress=progress, cancel=cancel,
        sigma_scale=sigma_scale, accumulate_dtype=accumulate_dtype,
        accumulate_device=accumulate_device, pad_value=pad_value, channels_last=channels_last,
        precision=precision, compile=compile,
    )
    return acc.probabilities()


def predict_labels(model: nn.Module, image: torch.Tensor | np.ndarray, **options) -> np.ndarray:
    """Argmax labels (Z, Y, X) of the blended probabilities: uint8, uint16 above 256 classes.

    Takes the keyword options of ``sliding_window_probs``. Bounded memory: z-slabs are reduced
    to labels as their last window finishes (``engine/_slab_inferer.py``), so besides the
    image and the result only a window-deep accumulator exists (the whole-volume one was
    4.4 GB for a 300x512x512 CT with 14 classes).
    """
    from dinomix_core.engine._slab_inferer import stream_labels  # it builds on this module

    return stream_labels(model, image, **options)


def predict_volume(
    model: nn.Module,
    volume: Volume,
    *,
    preprocess: Callable[[np.ndarray], np.ndarray | torch.Tensor],
    window: int | Sequence[int],
    skip_outside_body: bool | None = None,
    return_probs: bool = False,
    **options,
) -> Volume | tuple[Volume, torch.Tensor]:
    """Label map of a CT ``volume`` on exactly its grid (shape, spacing, origin, direction).

    ``preprocess`` maps the volume's (z, y, x) array (HU for CT) to the float32 network input
    of the same shape (e.g. ``io.clip_normalize``). ``skip_outside_body`` (default: True for
    CT unless a ``skip_mask`` is given) skips windows outside ``body_mask`` of the HU array
    and sets every voxel outside the body to background.
    Other keyword options are those of ``sliding_window_probs``. With ``return_probs`` also
    returns (C, Z, Y, X) float32 probabilities on the CPU. The labels are uint8 (uint16 above
    256 classes), ``modality="labels"``, no ``source``.
    """
    hu = np.asarray(volume.array)
    image = preprocess(hu)
    if tuple(image.shape) != tuple(hu.shape):
        raise ValueError(
            f"preprocess changed the volume's shape from {tuple(hu.shape)} to {tuple(image.shape)}; "
            "it must map the (z, y, x) array voxel for voxel (resample before inference instead)"
        )
    if skip_outside_body is None:
        skip_outside_body = (volume.modality or "").upper() == "CT" and options.get("skip_mask") is None
    if skip_outside_body:
        if options.get("skip_mask") is not None:
            raise ValueError("give either skip_mask or skip_outside_body=True, not both")
        options["skip_mask"] = body_mask(hu)
    if return_probs:
        acc = _accumulate(model, image, window=window, **options)
        probs = acc.probabilities()
        labels = class_argmax(probs).numpy().astype(_label_dtype(probs.shape[0]))
        _clear_outside(labels, options.get("skip_mask") if skip_outside_body else None)
        return volume.with_array(labels, source=None, modality="labels"), probs
    labels = predict_labels(model, image, window=window, **options)
    _clear_outside(labels, options.get("skip_mask") if skip_outside_body else None)
    return volume.with_array(labels, source=None, modality="labels")


def _clear_outside(labels: np.ndarray, body: np.ndarray | None) -> None:
    """No organ lies outside the patient: voxels outside the body mask become background."""
    if body is not None:
        labels[~body] = 0


# --- the engine room -------------------------------------------------------------------


@dataclass
class _Accumulated:
    """Weighted softmax sums over the padded volume and how to crop back to the input."""

    scores: torch.Tensor  # (C, Zp, Yp, Xp): sum over windows of weight * probability
    weights: torch.Tensor  # (Zp, Yp, Xp): sum of weights
    crop: tuple[slice, slice, slice]

    def _slabs(self) -> Iterator[tuple[int, int, tuple[slice, slice, slice]]]:
        zc, yc, xc = self.crop
        depth = zc.stop - zc.start
        for z0 in range(0, depth, _SLAB):
            z1 = min(z0 + _SLAB, depth)
            yield z0, z1, (slice(zc.start + z0, zc.start + z1), yc, xc)

    def probabilities(self) -> torch.Tensor:
        zc, yc, xc = self.crop
        shape = (zc.stop - zc.start, yc.stop - yc.start, xc.stop - xc.start)
        out = torch.empty((self.scores.shape[0], *shape), dtype=torch.float32)
        for z0, z1, region in self._slabs():
            slab = self.scores[(slice(None), *region)].float() / self.weights[region]
            out[:, z0:z1] = slab.cpu()
        return out


def _accumulate(
    model: nn.Module,
    image: torch.Tensor | np.ndarray,
    *,
    window: int | Sequence[int],
    overlap: float | Sequence[float] = 0.5,
    sw_batch_size: int = 4,
    device: torch.device | str | None = None,
    amp: bool = True,
    tta_flips: Sequence[int] = (),
    skip_mask: np.ndarray | torch.Tensor | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    sigma_scale: float = 0.125,
    accumulate_dtype: torch.dtype = torch.float32,
    accumulate_device: torch.device | str | None = None,
    pad_value: float | None = None,
    channels_last: bool | None = None,
    precision: str = "auto",
    compile: bool = False,
) -> _Accumulated:
    image = _as_image(image)
    spatial = tuple(image.shape[1:])
    window = as_triple(window, "window")
    overlaps = overlap_triple(overlap)
    if not isinstance(sw_batch_size, int) or sw_batch_size < 1:
        raise ValueError(f"sw_batch_size must be a positive int, got {sw_batch_size!r}")
    if accumulate_dtype not in (torch.float32, torch.float16, torch.float64):
        raise ValueError(f"accumulate_dtype must be torch.float32, float16 or float64, got {accumulate_dtype}")
    flips = _flip_sets(tta_flips)
    device = torch.device(device) if device is not None else _default_device()
    if channels_last is None:
        channels_last = device.type == "cpu"
    mask = _as_mask(skip_mask, spatial)

    pads = pad_amounts(spatial, window)
    if any(before or after for before, after in pads):
        fill = float(image.min()) if pad_value is None else float(pad_value)
        torch_pad = [amount for pair in reversed(pads) for amount in pair]  # x first for F.pad
        image = F.pad(image, torch_pad, value=fill)
        if mask is not None:
            mask = np.pad(mask, pads, constant_values=False)
    padded = tuple(image.shape[1:])
    crop = tuple(slice(before, before + size) for (before, _), size in zip(pads, spatial))
    if device.type == "cuda" and _fits_on_gpu(image, device):
        image = image.to(device)  # one copy up front instead of a CPU gather + copy per batch

    grid = WindowGrid.build(padded, window, overlaps)
    corners = list(grid.corners())
    if mask is None:
        to_run, skipped = corners, []
    else:
        touched = windows_touching(mask, grid)
        to_run = [c for c, t in zip(corners, touched) if t]
        skipped = [c for c, t in zip(corners, touched) if not t]
    total = len(to_run)
    weight = gaussian_importance(window, sigma_scale, device=device)
    autocast = _autocast(device, amp, precision)
    whole = slice(None)

    scores: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    acc_weight = weight

    def allocate(classes: int) -> None:
        nonlocal scores, weights, acc_weight
        where = _accumulator_device(device, accumulate_device, classes, padded, accumulate_dtype)
        scores = torch.zeros((classes, *padded), dtype=accumulate_dtype, device=where)
        weights = torch.zeros(padded, dtype=torch.float32, device=where)
        acc_weight = weight.to(where)

    with _prepared(model, device, channels_last, compile) as net, torch.inference_mode():
        if progress is not None:
            progress(0, total)
        for first in range(0, total, sw_batch_size):
            if cancel is not None and cancel():
                raise InferenceCancelled(f"inference cancelled after {first} of {total} windows")
            batch = to_run[first : first + sw_batch_size]
            x = torch.stack([image[(whole, *grid.slices(c))] for c in batch]).to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            probs = _softmax_tta(net, x, flips, autocast)
            if scores is None:
                allocate(probs.shape[1])
            fused = probs.device == scores.device and scores.dtype == torch.float32
            if not fused:  # weight where the probabilities are, then move/cast once per batch
                probs = probs.mul_(weight).to(device=scores.device, dtype=scores.dtype)
            for i, corner in enumerate(batch):
                region = grid.slices(corner)
                if fused:
                    scores[(whole, *region)].addcmul_(probs[i], acc_weight)
                else:
                    scores[(whole, *region)].add_(probs[i])
                weights[region].add_(acc_weight)
            if progress is not None:
                progress(first + len(batch), total)
        if scores is None:
            allocate(_count_classes(net, image, grid, device, autocast))
        for corner in skipped:  # certain background, blended like any other window
            region = grid.slices(corner)
            scores[(0, *region)].add_(acc_weight)
            weights[region].add_(acc_weight)
    return _Accumulated(scores, weights, crop)


def _softmax_tta(net: nn.Module, x: torch.Tensor, flips: list[tuple[int, ...]], autocast) -> torch.Tensor:
    """Mean softmax (float32, (B, C, D, H, W)) over the mirrored copies of the batch ``x``."""
    total = None
    for dims in flips:
        xi = torch.flip(x, dims) if dims else x
        with autocast:
            out = net(xi)
        # softmax over channels is ~2.5x slower on channels-last tensors than on contiguous ones
        probs = torch.softmax(_logits(out, x).float().contiguous(), dim=1)
        if dims:
            probs = torch.flip(probs, dims)
        total = probs if total is None else total.add_(probs)
    if len(flips) > 1:
        total.div_(len(flips))
    return total


def _logits(out, x: torch.Tensor) -> torch.Tensor:
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not torch.is_tensor(out) or out.ndim != 5 or out.shape[0] != x.shape[0] or out.shape[2:] != x.shape[2:]:
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(
            f"the model must map (B, 1, D, H, W) windows to (B, C, D, H, W) logits; "
            f"for input {tuple(x.shape)} it returned {got}"
        )
    if out.shape[1] < 2:
        raise ValueError(f"the model returned {out.shape[1]} channel; softmax inference needs >= 2 classes")
    return out


def _count_classes(net: nn.Module, image: torch.Tensor, grid: WindowGrid, device, autocast) -> int:
    """Number of output classes when every window was skipped: one window is run to learn it.

    (An empty batch would be free, but normalisation layers reject it.)
    """
    x = image[(slice(None), *grid.slices(next(grid.corners())))][None].to(device)
    with autocast:
        return _logits(net(x), x).shape[1]


@contextmanager
def _prepared(model: nn.Module | Callable, device: torch.device, channels_last: bool,
              compile: bool = False) -> Iterator[nn.Module]:
    """The model in eval mode on ``device`` (channels-last 3D weights); restored on exit.

    With ``compile`` it is called through ``_compiled`` (eager fallback). A plain callable
    (not an ``nn.Module``) is used as it is.
    """
    if not isinstance(model, nn.Module):
        yield model
        return
    was_training = model.training
    saved_params = [(p, p.data) for p in model.parameters()]
    saved_buffers = [(m, dict(m._buffers)) for m in model.modules()]
    try:
        model.eval()
        model.to(device)
        if channels_last:
            for p in model.parameters():
                if p.ndim == 5:
                    p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
        yield _compiled(model) if compile else model
    finally:
        for p, data in saved_params:
            p.data = data
        for m, buffers in saved_buffers:
            m._buffers.update(buffers)
        model.train(was_training)


def _as_image(image) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    elif torch.is_tensor(image):
        image = image.detach().to(torch.float32)
    else:
        raise TypeError(f"image must be a numpy array or torch tensor, got {type(image).__name__}")
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.numel() == 0:
        raise ValueError(f"image must be a non-empty (Z, Y, X) or (channels, Z, Y, X) array, got shape {tuple(image.shape)}")
    return image


def _as_mask(mask, spatial: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    mask = mask.detach().cpu().numpy() if torch.is_tensor(mask) else np.asarray(mask)
    if tuple(mask.shape) != spatial:
        raise ValueError(f"skip_mask has shape {tuple(mask.shape)}, the image {spatial}; both are (z, y, x)")
    return mask.astype(bool, copy=False)


def _flip_sets(tta_flips: Sequence[int]) -> list[tuple[int, ...]]:
    """Batch-tensor dims to flip for each TTA pass: the identity first, then every combination."""
    axes = sorted({int(a) for a in tta_flips})
    if any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"tta_flips are volume axes 0 (z), 1 (y), 2 (x); got {tuple(tta_flips)}")
    combos = [c for r in range(len(axes) + 1) for c in combinations(axes, r)]
    return [tuple(2 + a for a in c) for c in combos]
