"""Predict on the network's grid (LPS, target spacing), return everything on the input's exact grid.

The student was trained on cases reoriented to LPS and resampled to one spacing
(``data.geometry``). A prediction is made there too, and comes back by resampling the class
probabilities, not the labels, to the input's grid (after reorientation only) and taking the
argmax there: a 2 mm thin structure that covers half a 3 mm voxel on the network's grid still
wins the voxels where its probability is highest, while nearest-neighbour label resampling
would drop or thicken it. The per-voxel entropy is computed from the same resampled
probabilities. Finally the reorientation is undone by an exact permutation / flip.

Memory: :func:`stream_probabilities` hands finished z-slabs of network-grid probabilities on;
:class:`RegridSlabs` keeps only the few network slices that the next output slices need, and
hands output slabs of ``slab`` slices on. So neither grid's full C x Z x Y x X probability
volume exists (unless the caller asks for the probabilities); the full-size arrays are the
image on both grids, the labels (1 byte per voxel) and the uncertainty (2 bytes per voxel).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dinomix_core.data.geometry import NetworkGrid, canonical_spacing, network_grid, same_spacing
from dinomix_core.engine._argmax import class_argmax
from dinomix_core.engine._body import body_mask
from dinomix_core.engine._slab_inferer import stream_probabilities
from dinomix_core.engine._uncertainty import SlabUncertainty
from dinomix_core.io.orientation import reorientation_of
from dinomix_core.io.resample import linear_axis_weights
from dinomix_core.io.volume import Volume

SlabSink = Callable[[int, torch.Tensor], None]


class RegridSlabs:
    """A slab sink that resamples (C, dz, Yn, Xn) network-grid slabs onto the canonical input grid.

    Network slabs must arrive in z order without gaps (as :func:`stream_probabilities` gives
    them); each output slab (C, <= ``slab``, Y, X) float32 goes to ``out(z0, probs)`` as soon as
    the network slices it interpolates between have arrived. Grids share origin and direction:
    output voxel i lies at network index ``i * dst_spacing / src_spacing`` (mm, per axis).
    """

    def __init__(self, out: SlabSink, src_shape_zyx: Sequence[int], src_spacing_zyx: Sequence[float],
                 dst_shape_zyx: Sequence[int], dst_spacing_zyx: Sequence[float], *, slab: int = 4):
        self.out = out
        self.src_depth = int(src_shape_zyx[0])
        self.dst_shape = tuple(int(n) for n in dst_shape_zyx)
        self.slab = int(slab)
        plans = []
        for n_dst, n_src, d, s in zip(self.dst_shape, src_shape_zyx, dst_spacing_zyx, src_spacing_zyx):
            scale = float(d) / float(s)
            same = int(n_dst) == int(n_src) and abs(scale - 1.0) < 1e-6
            plans.append(None if same else tuple(torch.from_numpy(a) for a in linear_axis_weights(n_dst, int(n_src), scale)))
        self.plans = plans  # per axis (z, y, x): None (same grid) or (lo, hi, weight of hi)
        self.z_plan = plans[0]
        # In-plane: one bilinear grid_sample at the same positions as linear_axis_weights.
        self.yx_grid = None if plans[1] is None and plans[2] is None else _in_plane_grid(
            plans[1:], self.dst_shape[1:], [int(n) for n in src_shape_zyx[1:]])
        self.buffer: torch.Tensor | None = None  # network slices [start, start + buffer depth)
        self.start = 0
        self.next_out = 0

    @property
    def done(self) -> bool:
        return self.next_out == self.dst_shape[0]

    def __call__(self, z0: int, probs: torch.Tensor) -> None:
        probs = probs.float()
        if self.buffer is None:
            if z0 != 0:
                raise RuntimeError(f"network slab at z={z0} arrived first (expected z=0)")
            self.buffer, self.start = probs, 0
        else:
            if z0 != self.start + self.buffer.shape[1]:
                raise RuntimeError(f"network slab at z={z0} arrived out of order")
            self.buffer = torch.cat([self.buffer, probs], dim=1)
        end = self.start + self.buffer.shape[1]
        while self.next_out < self.dst_shape[0]:
            z1 = min(self.next_out + self.slab, self.dst_shape[0])
            needed = z1 if self.z_plan is None else int(self.z_plan[1][z1 - 1]) + 1  # last hi index + 1
            if needed > end:
                break
            self.out(self.next_out, self._block(self.next_out, z1))
            self.next_out = z1
        if self.next_out < self.dst_shape[0]:  # drop network slices no later output slice reads
            first = self.next_out if self.z_plan is None else int(self.z_plan[0][self.next_out])
            if first > self.start:
                self.buffer = self.buffer[:, first - self.start:].contiguous()
                self.start = first
        else:
            self.buffer = self.buffer[:, :0]
            self.start = end

    def _block(self, z0: int, z1: int) -> torch.Tensor:
        if self.z_plan is None:
            block = self.buffer[:, z0 - self.start : z1 - self.start]
        else:
            lo, hi, w = (part[z0:z1] for part in self.z_plan)
            block = _lerp(self.buffer, 1, lo - self.start, hi - self.start, w)
        if self.yx_grid is not None:
            block = _sample_in_plane(block, self.yx_grid)
        return block.contiguous()


def _in_plane_grid(plans, dst_yx: Sequence[int], src_yx: Sequence[int]) -> torch.Tensor:
    """(Y, X, 2) grid_sample coordinates (x, y; align_corners) of each output pixel's source position.

    Why grid_sample rather than a gather and a lerp per axis: on a full CT's 14 class
    channels the per-axis ``index_select`` along x cost 0.72 s per 4-slice output slab (1
    thread), one bilinear ``grid_sample`` 0.22 s, equal to 2e-6. Positions are those of
    ``linear_axis_weights`` (clamped at the edges, which ``padding_mode="border"`` keeps).
    """
    coords = []
    for plan, n_dst, n_src in zip(plans, dst_yx, src_yx):
        pos = torch.arange(n_dst, dtype=torch.float64) if plan is None else plan[0].double() + plan[2].double()
        coords.append((2.0 * pos / (n_src - 1) - 1.0) if n_src > 1 else torch.zeros(n_dst, dtype=torch.float64))
    gy, gx = torch.meshgrid(coords[0], coords[1], indexing="ij")
    return torch.stack([gx, gy], dim=-1).float()


def _sample_in_plane(block: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(C, dz, Yn, Xn) -> (C, dz, Y, X): every slice bilinearly at ``grid``'s positions."""
    classes, depth = block.shape[:2]
    # Classes x slices as the channels of one image: no transposes, and one (Y, X) grid.
    flat = block.contiguous().view(1, classes * depth, *block.shape[2:])
    out = F.grid_sample(flat, grid[None], mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(classes, depth, *grid.shape[:2])


def _lerp(t: torch.Tensor, axis: int, lo: torch.Tensor, hi: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    a = t.index_select(axis, lo)
    b = t.index_select(axis, hi)
    shape = [1] * t.ndim
    shape[axis] = -1
    return a.lerp_(b, w.view(shape))


class _LabelSink:
    """Argmax labels (z, y, x) of probability slabs; optionally the float32 probabilities too."""

    def __init__(self, shape_zyx: Sequence[int], keep_probs: bool):
        self.shape = tuple(int(n) for n in shape_zyx)
        self.keep_probs = keep_probs
        self.labels: np.ndarray | None = None
        self.probs: torch.Tensor | None = None

    def __call__(self, z0: int, probs: torch.Tensor) -> None:
        if probs.dtype == torch.uint8:  # labels already (RegridLabels)
            if self.labels is None:
                self.labels = np.empty(self.shape, dtype=np.uint8)
            self.labels[z0 : z0 + probs.shape[0]] = probs.numpy()
            return
        classes = probs.shape[0]
        if self.labels is None:
            self.labels = np.empty(self.shape, dtype=np.uint8 if classes <= 256 else np.uint16)
            if self.keep_probs:
                self.probs = torch.empty((classes, *self.shape), dtype=torch.float32)
        dz = probs.shape[1]
        self.labels[z0 : z0 + dz] = class_argmax(probs).numpy()
        if self.probs is not None:
            self.probs[:, z0 : z0 + dz] = probs


def _stream_to_input(model, grid: NetworkGrid, sink, *, skip_mask_net, tta: bool, progress, cancel,
                     regrid_class=None) -> None:
    """Run the student on ``grid.network`` and feed ``sink`` canonical-input-grid slabs:
    probabilities (``RegridSlabs``, the default ``regrid_class``) or labels (``RegridLabels``)."""
    net_volume = grid.network
    image = model.preprocess(np.asarray(net_volume.array))
    regrid = (regrid_class or RegridSlabs)(sink, net_volume.shape, net_volume.spacing_zyx, grid.canonical_shape,
                                           grid.canonical_spacing)
    stream_probabilities(model.model, image, window=model.window, on_slab=regrid, **model.inference.options(),
                         device=model.device, tta_flips=(1, 2) if tta else (), skip_mask=skip_mask_net,
                         progress=progress, cancel=cancel)
    if not regrid.done:
        raise RuntimeError(f"only {regrid.next_out} of {grid.canonical_shape[0]} slices came back from the network grid")


def needs_regrid(model, volume: Volume) -> bool:
    """Whether ``volume`` must be reoriented or resampled for ``model`` (else it predicts as it is)."""
    if model.reorient and not reorientation_of(volume.direction).is_identity:
        return True
    target = model.target_spacing
    return target is not None and not same_spacing(canonical_spacing(volume.spacing_zyx, volume.direction)
                                                   if model.reorient else volume.spacing_zyx, target)


def model_grid(model, volume: Volume) -> NetworkGrid:
    """``volume`` on the grid ``model`` (a ``pipeline.LoadedModel``) was trained on."""
    return network_grid(volume, model.target_spacing, reorient=model.reorient)


def predict_labels_regridded(model, volume: Volume, *, tta: bool = False, progress=None, cancel=None,
                             return_probs: bool = False, skip_mask: np.ndarray | None = None):
    """Labels (Volume on ``volume``'s exact grid, z, y, x) predicted on the model's grid.

    As ``inferer.predict_volume``: for a CT, windows outside ``body_mask`` are skipped and
    labels there are background, unless ``skip_mask`` (on ``volume``'s grid) is given. With
    ``return_probs`` also the (C, z, y, x) float32 probabilities on ``volume``'s grid (full size).
    """
    grid = model_grid(model, volume)
    is_ct = (volume.modality or "").upper() == "CT"
    body = _canonical_body(grid) if (is_ct and skip_mask is None) else None
    mask = body if skip_mask is None else np.asarray(grid.reorientation.to_canonical(np.asarray(skip_mask, dtype=bool)))
    sink = _LabelSink(grid.canonical_shape, keep_probs=return_probs)
    # Labels only: RegridLabels interpolates just where the network's classes disagree (same labels).
    classes = getattr(getattr(model, "labelmap", None), "num_classes", 0)
    labels_only = not return_probs and 0 < classes < 255
    if labels_only:
        from dinomix_core.engine._regrid_labels import RegridLabels
    _stream_to_input(model, grid, sink, skip_mask_net=None if mask is None else grid.canonical_mask_to_network(mask),
                     tta=tta, progress=progress, cancel=cancel, regrid_class=RegridLabels if labels_only else None)
    if body is not None:
        sink.labels[~body] = 0
    out = volume.with_array(grid.to_input(sink.labels), source=None, modality="labels")
    if not return_probs:
        return out
    return out, torch.from_numpy(grid.to_input(sink.probs.numpy()))


def predict_with_uncertainty_regridded(model, volume: Volume, *, class_weights=None, tta: bool = False,
                                       progress=None, cancel=None):
    """``(labels Volume, float16 uncertainty (z, y, x), score, per-class entropy)`` on ``volume``'s exact grid.

    The numbers are those of ``_uncertainty.predict_with_uncertainty_bounded``, computed from the
    probabilities resampled to the input's grid. For a CT, labels and uncertainty are 0 outside
    the body (found on the input's grid in LPS order; windows outside it are skipped on the
    network's grid).
    """
    grid = model_grid(model, volume)
    body = _canonical_body(grid) if (volume.modality or "").upper() == "CT" else None
    sink = SlabUncertainty(grid.canonical_shape)
    _stream_to_input(model, grid, sink, skip_mask_net=None if body is None else grid.canonical_mask_to_network(body),
                     tta=tta, progress=progress, cancel=cancel)
    score, per_class = sink.summary(class_weights)
    labels, uncertainty = sink.labels, sink.uncertainty
    del sink
    if body is not None:
        outside = ~body
        labels[outside] = 0
        uncertainty[outside] = 0
    return (volume.with_array(grid.to_input(labels), source=None, modality="labels"), grid.to_input(uncertainty),
            float(score), per_class)


def _canonical_body(grid: NetworkGrid) -> np.ndarray:
    """Body mask on the canonical input grid: its slice-wise hole filling needs axial slices on axis 0."""
    return body_mask(np.asarray(grid.canonical.array))
