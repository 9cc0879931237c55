"""Class-aware training patches with exactly aligned teacher-token crops.

Uniform crops of an abdominal CT almost never contain an adrenal gland (~0.01% of voxels),
so a share ``fg_fraction`` of patches is centred on a voxel of a foreground class chosen with
weights that favour rare classes; the rest are uniform. The y/x crop origin is snapped to a
multiple of the token stride, so the token crop is an exact integer slice of the cached token
map: tokens[z0:z0+D, :, y0/s:(y0+H)/s, x0/s:(x0+W)/s].

Class weighting (per case, over the foreground classes present in it, from their voxel
counts n_c): ``"inverse-sqrt-frequency"`` (default) p_c ~ 1/sqrt(n_c), a compromise that
shows a 166-voxel adrenal gland ~16x as often as a 41,692-voxel liver rather than ~250x;
``"inverse-frequency"`` p_c ~ 1/n_c; ``"uniform"`` p_c equal; ``"frequency"`` p_c ~ n_c
(a foreground voxel at random); or a sequence of per-class weights indexed by label value.

Volumes smaller than the patch (or not a multiple of the stride in-plane) are padded at the
high end of each axis: image 0 (air after the student clip), label 0, tokens 0 (a zero token
is padding, which FKD ignores). Axis order is (z, y, x) throughout, sizes in voxels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dinomix_core.data.patch_options import CLASS_WEIGHTINGS  # noqa: F401  (re-exported)
from dinomix_core.data.preprocess import DEFAULT_STRIDE, check_stride


@dataclass
class _ClassIndex:
    """Per-case foreground lookup: for each present class, its voxel count and flat indices."""

    classes: np.ndarray  # present foreground class values, ascending
    counts: np.ndarray  # full voxel counts of those classes
    indices: list[np.ndarray]  # flat voxel indices (possibly evenly subsampled) per class


class PatchSampler:
    """Draw (image, label, tokens) patches of ``patch_size`` = (D, H, W) voxels from a case.

    ``case`` is anything with ``case_id``, ``image`` (z, y, x float32), ``label`` ((z, y, x)
    integer or None) and ``tokens`` ((z, C, h, w) or None), e.g. ``LoadedCase``. H and W must
    be multiples of ``stride``. ``jitter`` moves a class-centred patch by up to that fraction
    of its size per axis so the chosen voxel is not always at the exact centre.
    ``max_indices_per_class`` bounds the memory of the per-class voxel lists (evenly
    subsampled in raster order, which keeps them spread over the organ).
    """

    def __init__(
        self,
        patch_size: Sequence[int],
        *,
        fg_fraction: float = 0.5,
        class_weights: str | Sequence[float] = "inverse-sqrt-frequency",
        stride: int = DEFAULT_STRIDE,
        jitter: float = 0.25,
        max_indices_per_class: int = 100_000,
    ):
        self.patch_size = tuple(int(p) for p in patch_size)
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be 3 positive voxel counts (D, H, W), got {patch_size!r}")
        self.stride = check_stride(stride)
        if self.patch_size[1] % self.stride or self.patch_size[2] % self.stride:
            raise ValueError(
                f"patch H and W {self.patch_size[1:]} must be multiples of the token stride {self.stride}"
            )
        if not 0.0 <= fg_fraction <= 1.0:
            raise ValueError(f"fg_fraction must be within [0, 1], got {fg_fraction}")
        if not 0.0 <= jitter < 0.5:
            raise ValueError(f"jitter must be within [0, 0.5), got {jitter}")
        if isinstance(class_weights, str):
            if class_weights not in CLASS_WEIGHTINGS:
                raise ValueError(f"unknown class weighting {class_weights!r}; choose one of {CLASS_WEIGHTINGS}")
        else:
            class_weights = np.asarray(class_weights, dtype=np.float64)
            if class_weights.ndim != 1 or (class_weights < 0).any():
                raise ValueError("explicit class weights must be a 1D sequence of non-negative numbers")
        self.fg_fraction = float(fg_fraction)
        self.class_weights = class_weights
        self.jitter = float(jitter)
        self.max_indices_per_class = int(max_indices_per_class)
        self._index: dict[str, _ClassIndex] = {}

    # ---- per-case foreground index -------------------------------------------------------
    def prepare(self, cases: Sequence) -> None:
        """Build the per-class voxel lists of ``cases`` now rather than on first use."""
        for case in cases:
            self._class_index(case)

    def _class_index(self, case) -> _ClassIndex | None:
        if case.label is None:
            return None
        found = self._index.get(case.case_id)
        if found is None:
            found = self._index[case.case_id] = _build_class_index(case.label, self.max_indices_per_class)
        return found

    def class_probabilities(self, case) -> dict[int, float]:
        """Probability of each present foreground class being the centre of a class-aware patch."""
        index = self._class_index(case)
        if index is None or len(index.classes) == 0:
            return {}
        probs = self._probabilities(index)
        return {int(c): float(p) for c, p in zip(index.classes, probs)}

    def _probabilities(self, index: _ClassIndex) -> np.ndarray:
        counts = index.counts.astype(np.float64)
        if isinstance(self.class_weights, str):
            weights = {
                "inverse-sqrt-frequency": 1.0 / np.sqrt(counts),
                "inverse-frequency": 1.0 / counts,
                "uniform": np.ones_like(counts),
                "frequency": counts,
            }[self.class_weights]
        else:
            table = self.class_weights
            weights = np.array([table[c] if c < len(table) else 0.0 for c in index.classes], dtype=np.float64)
        total = weights.sum()
        if total <= 0:
            return np.full(len(weights), 1.0 / len(weights))
        return weights / total

    # ---- sampling -----------------------------------------------------------------------
    def sample(self, case, rng: np.random.Generator) -> dict:
        """One patch: image (1, D, H, W) float32, label (D, H, W) int64 | None,
        tokens (C, D, H/s, W/s) float32 | None, origin (z, y, x) voxels, centre_class (0 = uniform)."""
        shape = tuple(case.image.shape)
        padded = self.padded_shape(shape)
        index = self._class_index(case)
        origin, centre_class = None, 0
        if index is not None and len(index.classes) and rng.random() < self.fg_fraction:
            pick = rng.choice(len(index.classes), p=self._probabilities(index))
            voxels = index.indices[pick]
            flat = int(voxels[rng.integers(len(voxels))])
            centre = np.unravel_index(flat, shape)
            origin = self._origin_around(centre, padded, rng)
            centre_class = int(index.classes[pick])
        if origin is None:
            origin = self._uniform_origin(padded, rng)
        return self.crop(case, origin) | {"centre_class": centre_class}

    def padded_shape(self, shape: Sequence[int]) -> tuple[int, int, int]:
        """The (z, y, x) extent a volume of ``shape`` is padded to (>= patch, y/x multiples of stride)."""
        s = self.stride
        d, h, w = self.patch_size
        return (
            max(int(shape[0]), d),
            max(math.ceil(int(shape[1]) / s) * s, h),
            max(math.ceil(int(shape[2]) / s) * s, w),
        )

    def _uniform_origin(self, padded, rng) -> tuple[int, int, int]:
        s = self.stride
        d, h, w = self.patch_size
        z0 = int(rng.integers(padded[0] - d + 1))
        y0 = int(rng.integers((padded[1] - h) // s + 1)) * s
        x0 = int(rng.integers((padded[2] - w) // s + 1)) * s
        return z0, y0, x0

    def _origin_around(self, centre, padded, rng) -> tuple[int, int, int]:
        """An origin whose patch contains ``centre``, near-centred with jitter, y/x on the stride."""
        origin = []
        for axis, (c, size, extent) in enumerate(zip(centre, self.patch_size, padded)):
            step = 1 if axis == 0 else self.stride
            reach = int(self.jitter * size)
            wanted = int(c) - size // 2 + int(rng.integers(-reach, reach + 1))
            # Origins that keep the voxel inside the patch and the patch inside the padded volume,
            # restricted to multiples of ``step``; never empty because ``size`` >= ``step``.
            lo = -(-max(0, int(c) - size + 1) // step) * step
            hi = (min(int(c), extent - size) // step) * step
            origin.append(int(np.clip((wanted // step) * step, lo, hi)))
        return tuple(origin)

    def crop(self, case, origin: Sequence[int]) -> dict:
        """The patch at ``origin`` (z, y, x; y/x multiples of the stride), zero-padded past the volume."""
        z0, y0, x0 = (int(o) for o in origin)
        s = self.stride
        if y0 % s or x0 % s:
            raise ValueError(f"patch origin {tuple(origin)} is not on the token stride {s} in y/x")
        d, h, w = self.patch_size
        image = np.zeros((1, d, h, w), dtype=np.float32)
        _paste(image[0], case.image, (z0, y0, x0))
        label = None
        if case.label is not None:
            label = np.zeros((d, h, w), dtype=case.label.dtype)  # uint8/uint16: widened on the training device
            _paste(label, case.label, (z0, y0, x0))
        tokens = None
        if case.tokens is not None:
            z, c, th, tw = case.tokens.shape
            if z != case.image.shape[0] or (th, tw) != (math.ceil(case.image.shape[1] / s), math.ceil(case.image.shape[2] / s)):
                raise ValueError(
                    f"case {case.case_id}: tokens {case.tokens.shape} do not match image {case.image.shape} at stride {s}"
                )
            # The cache's float16, as a (C, D, h, w) view: the batch stack makes the one copy and
            # the training device widens to float32 (half the bytes to copy and to transfer).
            block = np.zeros((d, c, h // s, w // s), dtype=case.tokens.dtype)
            _paste(block, case.tokens, (z0, 0, y0 // s, x0 // s))
            tokens = block.transpose(1, 0, 2, 3)
        return {"image": image, "label": label, "tokens": tokens, "origin": (z0, y0, x0)}


def _paste(out: np.ndarray, source: np.ndarray, origin: Sequence[int]) -> None:
    """Copy the part of ``source`` under the window ``out.shape`` at ``origin`` into ``out``."""
    src, dst = [], []
    for o, n, extent in zip(origin, out.shape, source.shape):
        stop = min(o + n, extent)
        if stop <= o:
            return
        src.append(slice(o, stop))
        dst.append(slice(0, stop - o))
    out[tuple(dst)] = source[tuple(src)]


def _build_class_index(label: np.ndarray, max_per_class: int) -> _ClassIndex:
    flat = np.asarray(label).reshape(-1)
    foreground = np.flatnonzero(flat)
    values = flat[foreground]
    order = np.argsort(values, kind="stable")
    foreground, values = foreground[order], values[order]
    classes, starts, counts = np.unique(values, return_index=True, return_counts=True)
    indices = []
    for start, count in zip(starts, counts):
        voxels = foreground[start : start + count]
        if max_per_class > 0 and count > max_per_class:
            voxels = voxels[:: math.ceil(count / max_per_class)]
        indices.append(np.ascontiguousarray(voxels))
    return _ClassIndex(classes=classes.astype(np.int64), counts=counts.astype(np.int64), indices=indices)
