"""One canonical orientation for the network: LPS, by exact permutation and flipping of the array.

A CT file may store its voxels in any order: axial slices from head to feet or feet to head,
rows anterior-to-posterior or the reverse, even sagittal slices first. Its direction matrix
says how. A network trained on one storage order sees a mirrored or transposed body in
another, so every volume is brought to one order before the network sees it: array axes
(z, y, x) running along world +z (superior), +y (posterior), +x (left), i.e. ITK's LPS world
axes, which is an identity direction matrix (what ``sitk.DICOMOrient(image, "LPS")`` gives).

Only whole-axis permutations and flips are used, never interpolation: every voxel keeps its
value and its world position, and the inverse restores the file's array bit for bit. An
oblique scan keeps its small residual rotation in the direction matrix (the nearest axis wins).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np

from .volume import Volume


@dataclass(frozen=True)
class Reorientation:
    """How a volume's (z, y, x) array maps to the canonical array, and back.

    ``perm[a]``: the source array axis that becomes canonical axis ``a``; ``flip[a]``: whether
    canonical axis ``a`` runs the other way than that source axis. Arrays may carry leading
    axes (e.g. classes, (C, z, y, x)); only the last three are moved.
    """

    perm: tuple[int, int, int] = (0, 1, 2)
    flip: tuple[bool, bool, bool] = (False, False, False)

    @property
    def is_identity(self) -> bool:
        return self.perm == (0, 1, 2) and not any(self.flip)

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """Source-order (..., z, y, x) array -> canonical order (a view where numpy allows)."""
        if self.is_identity:
            return array
        lead = array.ndim - 3
        out = np.transpose(array, tuple(range(lead)) + tuple(lead + p for p in self.perm))
        flipped = tuple(lead + a for a in range(3) if self.flip[a])
        return np.flip(out, flipped) if flipped else out

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        """Canonical-order (..., z, y, x) array -> the source's order (a view where numpy allows)."""
        if self.is_identity:
            return array
        lead = array.ndim - 3
        flipped = tuple(lead + a for a in range(3) if self.flip[a])
        out = np.flip(array, flipped) if flipped else array
        inverse = tuple(int(i) for i in np.argsort(self.perm))
        return np.transpose(out, tuple(range(lead)) + tuple(lead + p for p in inverse))

    def shape_to_canonical(self, shape_zyx) -> tuple[int, int, int]:
        return tuple(int(shape_zyx[p]) for p in self.perm)

    def to_dict(self) -> dict:
        return {"perm": list(self.perm), "flip": list(self.flip)}


def reorientation_of(direction) -> Reorientation:
    """The permutation/flip that makes ``direction`` (row-major 3x3, ITK x,y,z) closest to identity.

    Each index axis is assigned the world axis it runs most closely along (the assignment that
    maximises the summed |cosines|, so a 45-degree tie still gives a permutation), and is
    flipped when it runs along that world axis backwards.
    """
    d = np.asarray(direction, dtype=float).reshape(3, 3)  # column j: world direction of index axis j
    best = max(permutations(range(3)), key=lambda w: sum(abs(d[w[j], j]) for j in range(3)))
    # best[j]: the world axis (x=0, y=1, z=2) that ITK index axis j is assigned to.
    perm = [0, 0, 0]
    flip = [False, False, False]
    for j, w in enumerate(best):
        canonical_axis, source_axis = 2 - w, 2 - j  # array axes are (z, y, x): reversed ITK order
        perm[canonical_axis] = source_axis
        flip[canonical_axis] = bool(d[w, j] < 0)
    return Reorientation(tuple(perm), tuple(flip))


def to_canonical(volume: Volume) -> tuple[Volume, Reorientation]:
    """``volume`` in the canonical LPS array order, with the geometry that keeps every voxel in place.

    Returns the reoriented Volume (its array a view of the source's where possible; origin the
    world position of its voxel 0, spacing (z, y, x) mm and direction permuted accordingly)
    and the :class:`Reorientation` that :func:`from_canonical` inverts.
    """
    ro = reorientation_of(volume.direction)
    if ro.is_identity:
        return volume, ro
    d = np.asarray(volume.direction, dtype=float).reshape(3, 3)
    spacing_xyz = np.asarray(volume.spacing_xyz, dtype=float)
    shape_xyz = np.asarray(tuple(reversed(volume.shape)))
    # Source index (x, y, z) of the canonical voxel 0: the far end of every flipped axis.
    first = np.zeros(3)
    new_d = np.zeros((3, 3))
    new_spacing_xyz = np.zeros(3)
    for canonical_axis in range(3):
        j_new, j_src = 2 - canonical_axis, 2 - ro.perm[canonical_axis]
        sign = -1.0 if ro.flip[canonical_axis] else 1.0
        if ro.flip[canonical_axis]:
            first[j_src] = shape_xyz[j_src] - 1
        new_d[:, j_new] = sign * d[:, j_src]
        new_spacing_xyz[j_new] = spacing_xyz[j_src]
    origin = np.asarray(volume.origin_xyz, dtype=float) + d @ (spacing_xyz * first)
    out = Volume(
        ro.to_canonical(volume.array), spacing_zyx=tuple(reversed(new_spacing_xyz.tolist())),
        origin_xyz=tuple(origin.tolist()), direction=tuple(new_d.ravel().tolist()),
        source=volume.source, modality=volume.modality, meta=dict(volume.meta),
    )
    return out, ro


def from_canonical(canonical: Volume | np.ndarray, ro: Reorientation, reference: Volume | None = None):
    """Undo :func:`to_canonical`: an array back in the source order (contiguous copy), or a Volume
    on ``reference``'s grid (the source volume's exact geometry) when one is given."""
    array = canonical.array if isinstance(canonical, Volume) else canonical
    back = np.ascontiguousarray(ro.from_canonical(array))
    if reference is None:
        return back
    if tuple(back.shape[-3:]) != reference.shape:
        raise ValueError(f"array of shape {back.shape} does not fit the reference grid {reference.shape} (z, y, x)")
    kwargs = {}
    if isinstance(canonical, Volume):
        kwargs = {"source": canonical.source, "modality": canonical.modality}
    return reference.with_array(back, **kwargs)
