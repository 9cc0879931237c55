"""The grid the network sees: canonical orientation (LPS) and one target spacing, and the way back.

Real CT comes at any voxel spacing (0.6-1 mm in-plane, 1-5 mm slices) and in any storage
order. A network trained at one spacing sees organs at the wrong size in voxels at another,
and a mirrored or transposed body in another storage order. So, as nnU-Net does, every case
is brought to one grid before the network sees it, in training and in inference alike:

1. reoriented to LPS by an exact permutation / flip of its array (``io.orientation``);
2. resampled to the model's target spacing (mm, z, y, x): images linearly (or cubic
   B-spline), labels by nearest neighbour. The target is by default the median spacing of the
   labeled cases (:func:`median_spacing`) and is recorded in the checkpoint.

A volume already at the target spacing (within 0.1 %) is not resampled at all, so data sets
whose cases share one grid (the phantom) train exactly as before. Predictions go back by
resampling class probabilities (not labels) to the input's grid and reorienting them
(``engine._regrid``), so every output lies on the input file's exact grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from dinomix_core.io.orientation import Reorientation, from_canonical, reorientation_of, to_canonical
from dinomix_core.io.resample import check_spacing, resample_like, resample_to_spacing, resampled_size
from dinomix_core.io.volume import Volume

#: The orientation the network sees, as recorded in checkpoints.
CANONICAL_ORIENTATION = "LPS"
#: Relative spacing difference below which a volume counts as already at the target.
SPACING_RTOL = 1e-3


def same_spacing(a: Sequence[float], b: Sequence[float], rtol: float = SPACING_RTOL) -> bool:
    """True when two (z, y, x) mm spacings agree within ``rtol`` on every axis."""
    return all(abs(float(x) - float(y)) <= rtol * max(abs(float(x)), abs(float(y))) for x, y in zip(a, b))


def canonical_spacing(spacing_zyx: Sequence[float], direction: Sequence[float]) -> tuple[float, float, float]:
    """Spacing (z, y, x) mm of a volume after reorientation to LPS (its axes may be permuted)."""
    ro = reorientation_of(direction)
    return tuple(float(spacing_zyx[p]) for p in ro.perm)


def median_spacing(spacings: Iterable[Sequence[float]]) -> tuple[float, float, float]:
    """Per-axis median of (z, y, x) mm spacings (nnU-Net's default target spacing)."""
    values = np.asarray([tuple(float(s) for s in sp) for sp in spacings], dtype=float)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] != 3:
        raise ValueError("median_spacing needs at least one (z, y, x) spacing")
    return tuple(float(v) for v in np.median(values, axis=0))


@dataclass
class NetworkGrid:
    """One input volume on the network's grid, and what is needed to come back.

    ``network``: the volume in LPS order at ``spacing_zyx`` (its array HU float32 when
    resampled, else a view of the input's). ``canonical_shape``/``canonical_spacing``: the
    input's grid after reorientation only, (z, y, x) voxels / mm: where predictions are
    resampled back to before the reorientation is undone. ``input``: the input volume
    (reference for the exact output geometry).
    """

    input: Volume
    network: Volume
    reorientation: Reorientation
    canonical: Volume  # the input reoriented (array a view of the input's)
    resampled: bool

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        return self.canonical.shape

    @property
    def canonical_spacing(self) -> tuple[float, float, float]:
        return self.canonical.spacing_zyx

    @property
    def is_identity(self) -> bool:
        """True when the network sees the input's own array (nothing reoriented or resampled)."""
        return self.reorientation.is_identity and not self.resampled

    def labels_to_network(self, labels: Volume | np.ndarray) -> np.ndarray:
        """A label map on the input's grid -> on the network's grid (nearest neighbour, dtype kept)."""
        array = labels.array if isinstance(labels, Volume) else np.asarray(labels)
        if tuple(array.shape) != self.input.shape:
            raise ValueError(f"labels of shape {array.shape} do not lie on the input grid {self.input.shape} (z, y, x)")
        canonical = self.reorientation.to_canonical(array)
        if not self.resampled:
            return np.ascontiguousarray(canonical)
        vol = self.canonical.with_array(np.ascontiguousarray(canonical), modality="SEG")
        return resample_like(vol, self.network, is_label=True).array

    def mask_to_network(self, mask: np.ndarray) -> np.ndarray:
        """A boolean (z, y, x) mask on the input's grid -> on the network's grid (nearest neighbour)."""
        return self.labels_to_network(np.asarray(mask).astype(np.uint8)).astype(bool)

    def canonical_mask_to_network(self, mask: np.ndarray) -> np.ndarray:
        """A boolean (z, y, x) mask on the canonical input grid -> on the network's grid (nearest neighbour)."""
        mask = np.asarray(mask, dtype=bool)
        if tuple(mask.shape) != self.canonical_shape:
            raise ValueError(f"mask of shape {mask.shape} does not lie on the canonical grid {self.canonical_shape}")
        if not self.resampled:
            return mask
        vol = self.canonical.with_array(mask.astype(np.uint8), modality="SEG")
        return resample_like(vol, self.network, is_label=True).array.astype(bool)

    def to_input(self, canonical_array: np.ndarray) -> np.ndarray:
        """An array (..., z, y, x) on the canonical input grid -> the input's own order (contiguous)."""
        return from_canonical(canonical_array, self.reorientation)

    def to_input_volume(self, canonical_array: np.ndarray, **changes) -> Volume:
        """Like :meth:`to_input`, as a Volume with the input's exact geometry."""
        return self.input.with_array(self.to_input(canonical_array), **changes)


def network_grid(volume: Volume, target_spacing_zyx: Sequence[float] | None, *, reorient: bool = True,
                 interpolation: str = "linear") -> NetworkGrid:
    """Bring ``volume`` (z, y, x; spacing mm) to LPS order (``reorient``) and ``target_spacing_zyx`` (mm).

    ``target_spacing_zyx`` None keeps the volume's own spacing (checkpoints from before target
    spacings existed). ``interpolation``: "linear" or "bspline" for the image.
    """
    if reorient:
        canonical, ro = to_canonical(volume)
    else:
        canonical, ro = volume, Reorientation()
    resampled = False
    network = canonical
    if not ro.is_identity:  # one contiguous copy: torch refuses negative strides, sitk copies anyway
        network = canonical.with_array(np.ascontiguousarray(canonical.array))
    if target_spacing_zyx is not None:
        target = check_spacing(target_spacing_zyx, "target spacing")
        if not same_spacing(canonical.spacing_zyx, target):
            network = resample_to_spacing(canonical, target, is_label=False, interpolation=interpolation)
            resampled = True
    return NetworkGrid(input=volume, network=network, reorientation=ro, canonical=canonical, resampled=resampled)


def network_shape(shape_zyx: Sequence[int], spacing_zyx: Sequence[float], target_spacing_zyx: Sequence[float] | None) -> tuple[int, int, int]:
    """Voxels (z, y, x) of a canonical grid of ``shape_zyx`` / ``spacing_zyx`` mm once at the target."""
    if target_spacing_zyx is None or same_spacing(spacing_zyx, target_spacing_zyx):
        return tuple(int(n) for n in shape_zyx)
    return resampled_size(shape_zyx, spacing_zyx, target_spacing_zyx)


__all__ = [
    "CANONICAL_ORIENTATION",
    "NetworkGrid",
    "canonical_spacing",
    "median_spacing",
    "network_grid",
    "network_shape",
    "same_spacing",
]
