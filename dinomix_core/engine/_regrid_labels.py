"""Labels on the input's grid straight from network-grid probabilities, interpolating only where it matters.

Why: bringing all class probabilities of a full CT back to its grid costs more than the
network on a model trained at a coarser spacing: a 512 x 512 x 200 CT predicted at 2 x 2 x 2.5
mm spent 45 of 68 s (1 thread, ``--fast``) resampling 14 channels to 52 million voxels and
taking their argmax. When every network voxel an output voxel is interpolated from has the
same winning class c, the interpolated probabilities (a convex combination of vectors in
which c wins) have c winning too, ties included (the lower class wins at every corner, so
in their mix). So labels come from the network grid's own argmax wherever the (up to 8)
corners agree, and the exact interpolation is computed only for the voxels where they do
not: organ borders, a few per cent of the voxels. The result equals ``RegridSlabs`` followed
by the argmax (to float rounding), ``tests/engine/test_regrid_labels.py``.
"""

from __future__ import annotations

import torch

from dinomix_core.engine._argmax import class_argmax
from dinomix_core.engine._regrid import RegridSlabs

_UNDECIDED = 255  # corners disagree (labels themselves stay below: RegridLabels needs <= 255 classes)


class RegridLabels(RegridSlabs):
    """A network slab sink like :class:`RegridSlabs` whose output slabs are uint8 (dz, Y, X) labels.

    ``out(z0, labels)`` gets each output slab in z order; at most 255 classes.
    """

    def __call__(self, z0: int, probs: torch.Tensor) -> None:
        if probs.shape[0] >= _UNDECIDED:
            raise ValueError(f"RegridLabels handles at most {_UNDECIDED - 1} classes, got {probs.shape[0]}")
        super().__call__(z0, probs)

    def _block(self, z0: int, z1: int) -> torch.Tensor:
        buf = self.buffer
        depth, height, width = z1 - z0, self.dst_shape[1], self.dst_shape[2]
        # Per axis: source index pairs (lo, hi) and the weight of hi, relative to the buffer for z.
        axes = []
        for axis, (plan, n) in enumerate(zip(self.plans, (depth, height, width))):
            if plan is None:
                first = z0 if axis == 0 else 0
                lo = torch.arange(first, first + n)
                axes.append((lo, lo, torch.zeros(n)))
            else:
                lo, hi, w = (part[z0:z1] for part in plan) if axis == 0 else plan
                axes.append((lo, hi, w))
        (zlo, zhi, wz), (ylo, yhi, wy), (xlo, xhi, wx) = axes
        zlo, zhi = zlo - self.start, zhi - self.start
        net = class_argmax(buf[:, : int(zhi.max()) + 1])  # (nz, Yn, Xn) winning class per network voxel
        # The 8 corners of every output voxel agree when the (lo, hi) network rows, columns and
        # slices around it all hold one class.
        cell = net.index_select(1, ylo)
        cell = torch.where(cell == net.index_select(1, yhi), cell, _UNDECIDED)
        cols = cell.index_select(2, xlo)
        cols = torch.where(cols == cell.index_select(2, xhi), cols, _UNDECIDED)
        labels = cols.index_select(0, zlo)
        labels = torch.where(labels == cols.index_select(0, zhi), labels, _UNDECIDED)
        todo = (labels == _UNDECIDED).nonzero(as_tuple=True)
        if todo[0].numel():
            labels[todo] = class_argmax(_interpolate_at(buf, todo, axes, zlo, zhi)).to(labels.dtype)
        return labels


def _interpolate_at(buf: torch.Tensor, where, axes, zlo, zhi) -> torch.Tensor:
    """(C, n) probabilities of the output voxels ``where`` (z, y, x index tensors), trilinear."""
    oz, oy, ox = where
    (_, _, wz), (ylo, yhi, wy), (xlo, xhi, wx) = axes
    flat = buf.reshape(buf.shape[0], -1)
    ny, nx = buf.shape[2], buf.shape[3]
    out = None
    for zi, fz in ((zlo[oz], 1.0 - wz[oz]), (zhi[oz], wz[oz])):
        for yi, fy in ((ylo[oy], 1.0 - wy[oy]), (yhi[oy], wy[oy])):
            for xi, fx in ((xlo[ox], 1.0 - wx[ox]), (xhi[ox], wx[ox])):
                term = flat[:, (zi * ny + yi) * nx + xi] * (fz * fy * fx)
                out = term if out is None else out.add_(term)
    return out
