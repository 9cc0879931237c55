"""engine/_regrid_labels.py: labels on the input grid equal the argmax of the fully regridded probabilities."""

import numpy as np
import torch
import torch.nn.functional as F

from dinomix_core.engine._regrid import RegridSlabs
from dinomix_core.engine._regrid_labels import RegridLabels
from dinomix_core.io.resample import resampled_size


def _organ_like_probabilities(shape, classes=6, seed=0):
    """Smooth blobs: large uniform regions with borders between classes, like a segmentation."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, classes, *(max(2, n // 3) for n in shape), generator=gen) * 4
    logits = F.interpolate(logits, size=shape, mode="trilinear", align_corners=False)[0]
    return torch.softmax(logits * 3, dim=0)


def _run(cls, probs, src_spacing, dst_shape, dst_spacing, slabs):
    got = {}

    def sink(z0, block):
        got[z0] = block.argmax(dim=0).to(torch.uint8) if block.dtype != torch.uint8 else block

    regrid = cls(sink, probs.shape[1:], src_spacing, dst_shape, dst_spacing, slab=3)
    for z0, dz in slabs:
        regrid(z0, probs[:, z0 : z0 + dz])
    assert regrid.done
    return torch.cat([got[z] for z in sorted(got)], dim=0)


def test_labels_match_the_argmax_of_regridded_probabilities_when_z_and_the_plane_are_resampled():
    probs = _organ_like_probabilities((9, 20, 18))
    src, dst = (2.5, 2.0, 2.0), (1.2, 0.9765625, 0.9765625)
    dst_shape = resampled_size(probs.shape[1:], src, dst)
    slabs = ((0, 2), (2, 3), (5, 4))  # uneven network slabs, as the inferer hands them on
    ref = _run(RegridSlabs, probs, src, dst_shape, dst, slabs)
    got = _run(RegridLabels, probs, src, dst_shape, dst, slabs)
    assert got.dtype == torch.uint8 and got.shape == tuple(dst_shape)
    assert len(torch.unique(ref)) >= 4  # the test has borders to get right
    # Equal up to float rounding of near-ties (none expected in this data).
    assert (got == ref).float().mean() == 1.0


def test_labels_match_when_only_the_plane_is_resampled_and_at_the_clamped_edges():
    probs = _organ_like_probabilities((5, 16, 15), classes=4, seed=1)
    src, dst = (3.0, 2.0, 2.0), (3.0, 0.7, 0.9)
    dst_shape = resampled_size(probs.shape[1:], src, dst)
    dst_shape = (dst_shape[0], dst_shape[1] + 3, dst_shape[2] + 2)  # output reaching past the source's last voxel
    ref = _run(RegridSlabs, probs, src, dst_shape, dst, ((0, 5),))
    got = _run(RegridLabels, probs, src, dst_shape, dst, ((0, 1), (1, 4)))
    assert torch.equal(got, ref)


def test_a_thin_structure_between_network_voxels_survives():
    # A one-voxel sheet (class 1, p = 0.9) on the 3 mm grid comes back on the 1 mm slices near it.
    probs = torch.zeros((2, 6, 4, 4))
    probs[0] = 1.0
    probs[:, 3] = torch.tensor([0.1, 0.9]).view(2, 1, 1)
    ref = _run(RegridSlabs, probs, (3.0, 3.0, 3.0), (16, 4, 4), (1.0, 3.0, 3.0), ((0, 6),))
    got = _run(RegridLabels, probs, (3.0, 3.0, 3.0), (16, 4, 4), (1.0, 3.0, 3.0), ((0, 6),))
    assert torch.equal(got, ref) and got[:, 0, 0].tolist().count(1) == 3  # 8, 9, 10 mm
