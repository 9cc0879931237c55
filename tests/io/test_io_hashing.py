"""content_hash identifies a case by its bytes."""

from __future__ import annotations

import hashlib
import shutil

import pytest
from conftest import write_dicom_series

from dinomix_core.io import VolumeReadError, content_hash, write_image


def test_file_hash_is_sha256_of_the_bytes(tmp_path, ct_volume):
    path = write_image(ct_volume, tmp_path / "ct.nii.gz")
    assert content_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_mhd_hash_covers_its_data_file(tmp_path, ct_volume):
    path = write_image(ct_volume, tmp_path / "ct.mhd")
    before = content_hash(path)
    data = tmp_path / "ct.zraw"
    damaged = bytearray(data.read_bytes())
    damaged[len(damaged) // 2] ^= 1
    data.write_bytes(bytes(damaged))  # the header is untouched, only the data file changed
    assert content_hash(path) != before


def test_dicom_folder_hash_follows_contents_not_names(tmp_path, dicom_hu):
    write_dicom_series(tmp_path / "a", dicom_hu, series_uid="1.2.3.4")
    first = content_hash(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for i, f in enumerate(sorted((tmp_path / "b").iterdir())):
        f.rename(f.with_name(f"IM{i:04d}"))
    assert content_hash(tmp_path / "b") == first
    victim = sorted((tmp_path / "b").iterdir())[2]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1
    victim.write_bytes(bytes(data))
    assert content_hash(tmp_path / "b") != first
    next((tmp_path / "a").iterdir()).unlink()
    assert content_hash(tmp_path / "a") != first


def test_hash_of_missing_or_empty_paths(tmp_path):
    with pytest.raises(VolumeReadError, match="does not exist"):
        content_hash(tmp_path / "nope.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VolumeReadError, match="empty folder"):
        content_hash(tmp_path / "empty")
