"""Canonical LPS orientation: exact permutation/flip, agrees with SimpleITK's DICOMOrient, inverts bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from dinomix_core.io import Volume, read_volume, write_image
from dinomix_core.io.orientation import from_canonical, reorientation_of, to_canonical

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
# Orientation codes as DICOMOrient spells them (where the axes point *from*): LPS is the canonical one.
CODES = ["RAI", "LPS", "RAS", "PIR", "SAL", "ILP", "ASR", "IRA"]


def _world(volume: Volume, index_zyx) -> np.ndarray:
    """World point (mm, LPS) of voxel index (z, y, x)."""
    d = np.reshape(volume.direction, (3, 3))
    return np.asarray(volume.origin_xyz) + d @ (np.asarray(volume.spacing_xyz) * np.asarray(index_zyx[::-1]))


@pytest.fixture
def lps_volume() -> Volume:
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 1000, size=(5, 6, 7)).astype(np.int16)
    return Volume(array, spacing_zyx=(3.0, 2.0, 0.7), origin_xyz=(-10.0, 25.0, 300.0))


@pytest.mark.parametrize("code", CODES)
def test_any_storage_order_comes_back_to_the_same_lps_volume(lps_volume, code):
    stored = Volume.from_sitk(sitk.DICOMOrient(lps_volume.to_sitk(), code))
    canonical, ro = to_canonical(stored)
    assert np.array_equal(canonical.array, lps_volume.array)
    assert canonical.same_grid(lps_volume)
    # The same answer as SimpleITK's own reorientation.
    reference = Volume.from_sitk(sitk.DICOMOrient(stored.to_sitk(), "LPS"))
    assert np.array_equal(reference.array, canonical.array) and reference.same_grid(canonical)
    assert ro.is_identity == (code == "LPS")
    # Exact inverse, also for arrays with leading (class) axes.
    back = from_canonical(canonical, ro, reference=stored)
    assert np.array_equal(back.array, stored.array) and back.same_grid(stored)
    stacked = np.stack([canonical.array, -canonical.array])
    assert np.array_equal(from_canonical(stacked, ro)[1], -stored.array)


def test_every_voxel_keeps_its_world_position(lps_volume):
    stored = Volume.from_sitk(sitk.DICOMOrient(lps_volume.to_sitk(), "SAL"))
    canonical, ro = to_canonical(stored)
    src_index = (1, 4, 2)
    value = stored.array[src_index]
    # Find where that voxel went and check the world point is unchanged.
    target = _world(stored, src_index)
    hits = np.argwhere(canonical.array == value)
    assert any(np.allclose(_world(canonical, tuple(h)), target) for h in hits)


def test_oblique_scan_takes_the_nearest_axes_and_keeps_its_rotation():
    angle = np.radians(20.0)
    c, s = np.cos(angle), np.sin(angle)
    # Index x runs mostly along world -y, index y mostly along world +x: a rotated, swapped scan.
    direction = (s, c, 0.0, -c, s, 0.0, 0.0, 0.0, 1.0)
    volume = Volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4), spacing_zyx=(1.0, 2.0, 3.0), direction=direction)
    ro = reorientation_of(direction)
    assert ro.perm == (0, 2, 1) and ro.flip == (False, True, False)
    canonical, _ = to_canonical(volume)
    d = np.reshape(canonical.direction, (3, 3))
    assert np.all(np.diag(d) > 0.9)  # within 20 degrees of LPS on every axis, the rotation is kept
    assert canonical.spacing_zyx == (1.0, 3.0, 2.0)
    # Canonical voxel 0 is the source's last x voxel (index x runs along world -y: flipped).
    assert canonical.array[0, 0, 0] == volume.array[0, 0, 3]
    assert np.allclose(_world(canonical, (0, 0, 0)), _world(volume, (0, 0, 3)))
    assert np.allclose(_world(canonical, (1, 2, 1)), _world(volume, (1, 1, 1)))
    assert canonical.array[1, 2, 1] == volume.array[1, 1, 1]


def test_the_real_ct_is_stored_ras_and_reorients_exactly(real_ct_dir, tmp_path):
    ct = read_volume(real_ct_dir / "ct.nii.gz")
    assert not reorientation_of(ct.direction).is_identity  # NIfTI from RAS: x and y run backwards in LPS
    canonical, ro = to_canonical(ct)
    assert np.allclose(canonical.direction, IDENTITY)
    assert ro.perm == (0, 1, 2) and ro.flip == (False, True, True)
    # Permuted + flipped on disk: the same canonical volume.
    path = tmp_path / "pir.nii.gz"
    write_image(Volume.from_sitk(sitk.DICOMOrient(ct.to_sitk(), "PIR")), path)
    other, _ = to_canonical(read_volume(path))
    assert np.array_equal(other.array, canonical.array) and other.same_grid(canonical)
