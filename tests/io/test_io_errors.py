"""Bad input: each case raises a clear error naming the file, and nothing is (half-)written."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import SimpleITK as sitk

import dinomix_core.io.formats as formats
from dinomix_core.io import (
    DinomixInputError,
    GeometryMismatchError,
    LabelMap,
    LabelValueError,
    VolumeReadError,
    VolumeWriteError,
    read_labels,
    read_volume,
    write_image,
    write_labels,
)


def raises_for(path, error=DinomixInputError, match=None):
    """pytest.raises that also checks the message names the file and offers a fix."""

    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(error, match=match)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.ctx.__exit__(*exc)
            assert str(path) in str(self.info.value)
            assert self.info.value.fix
            return handled

    return _Check()


def test_missing_file_suggests_close_names(tmp_path, ct_volume):
    write_image(ct_volume, tmp_path / "case_001.nii.gz")
    missing = tmp_path / "case_01.nii.gz"
    with raises_for(missing, VolumeReadError, match=r"file does not exist\. Did you mean case_001\.nii\.gz"):
        read_volume(missing)
    with raises_for(tmp_path / "nowhere" / "ct.nii.gz", VolumeReadError, match="nor does its folder"):
        read_volume(tmp_path / "nowhere" / "ct.nii.gz")


def test_empty_file(tmp_path):
    (tmp_path / "ct.nii.gz").write_bytes(b"")
    with raises_for(tmp_path / "ct.nii.gz", VolumeReadError, match="empty file"):
        read_volume(tmp_path / "ct.nii.gz")


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("notes.nrrd", b"these are my notes, not an image\n" * 20, "not an image SimpleITK can read"),
        ("notes.nii.gz", b"plain text, not gzip" * 30, "not a valid gzip file"),
        ("notes.txt", b"hello", "unsupported file type '.txt'"),
    ],
)
def test_not_an_image(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with raises_for(tmp_path / name, VolumeReadError, match=match):
        read_volume(tmp_path / name)


def test_truncated_nii_gz(tmp_path, ct_volume):
    good = write_image(ct_volume, tmp_path / "good.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(good[: len(good) // 2])
    with raises_for(tmp_path / "cut.nii.gz", VolumeReadError, match="truncated"):
        read_volume(tmp_path / "cut.nii.gz")


def test_truncated_gzip_whose_stream_is_complete_but_short(tmp_path, ct_volume):
    """A valid gzip of a cut-off NIfTI: ITK would zero-fill it; the header size check catches it."""
    raw = write_image(ct_volume, tmp_path / "good.nii").read_bytes()
    (tmp_path / "short.nii.gz").write_bytes(gzip.compress(raw[: len(raw) - 100]))
    with raises_for(tmp_path / "short.nii.gz", VolumeReadError, match=r"670 of the 720 voxels .* are there"):
        read_volume(tmp_path / "short.nii.gz")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_label_file(tmp_path, ct_volume, label_volume, suffix):
    """Labels go through ITK, which zero-fills a short NIfTI; the integrity check stops that."""
    data = write_labels(label_volume, tmp_path / f"seg{suffix}", reference=ct_volume).read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) * 2 // 3])
    with raises_for(tmp_path / f"cut{suffix}", VolumeReadError, match="truncated"):
        read_labels(tmp_path / f"cut{suffix}")


def test_corrupt_nii_gz(tmp_path, ct_volume):
    data = bytearray(write_image(ct_volume, tmp_path / "good.nii.gz").read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0x5A
    (tmp_path / "bad.nii.gz").write_bytes(bytes(data))
    with raises_for(tmp_path / "bad.nii.gz", VolumeReadError, match="corrupt"):
        read_volume(tmp_path / "bad.nii.gz")


def test_truncated_uncompressed_nii(tmp_path, ct_volume):
    raw = write_image(ct_volume, tmp_path / "good.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(raw[:-100])
    with raises_for(tmp_path / "cut.nii", VolumeReadError, match="truncated"):
        read_volume(tmp_path / "cut.nii")


def test_corrupt_compressed_mha(tmp_path, ct_volume):
    data = bytearray(write_image(ct_volume, tmp_path / "good.mha").read_bytes())
    for i in range(len(data) - 400, len(data) - 300):
        data[i] ^= 0x5A
    (tmp_path / "bad.mha").write_bytes(bytes(data))
    with raises_for(tmp_path / "bad.mha", VolumeReadError, match="corrupt compressed voxel data"):
        read_volume(tmp_path / "bad.mha")


def test_2d_image(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 9), np.int16)), str(tmp_path / "slice.nii.gz"))
    with raises_for(tmp_path / "slice.nii.gz", VolumeReadError, match="2D image"):
        read_volume(tmp_path / "slice.nii.gz")


def test_single_slice_3d_image_is_2d(tmp_path, ct_volume):
    write_image(ct_volume.with_array(ct_volume.array[:1]), tmp_path / "one.mha")
    with raises_for(tmp_path / "one.mha", VolumeReadError, match="2D image"):
        read_volume(tmp_path / "one.mha")


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_4d_image(tmp_path, suffix):
    frame = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.int16))
    sitk.WriteImage(sitk.JoinSeries([frame, frame]), str(tmp_path / f"cine{suffix}"))
    with raises_for(tmp_path / f"cine{suffix}", VolumeReadError, match=r"is a 4D image of size \(5, 4, 3, 2\)"):
        read_volume(tmp_path / f"cine{suffix}")


def test_4d_image_with_one_time_point_reads_as_3d(tmp_path):
    frame = sitk.GetImageFromArray(np.arange(60, dtype=np.int16).reshape(3, 4, 5))
    frame.SetSpacing((0.5, 0.6, 2.0))
    sitk.WriteImage(sitk.JoinSeries([frame]), str(tmp_path / "t1.mha"))
    volume = read_volume(tmp_path / "t1.mha")
    np.testing.assert_array_equal(volume.array, np.arange(60).reshape(3, 4, 5))
    assert volume.spacing_zyx == (2.0, 0.6, 0.5)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".seg.nrrd"])
def test_vector_image(tmp_path, suffix):
    rgb = sitk.GetImageFromArray(np.zeros((3, 4, 5, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / f"rgb{suffix}"))
    expected_fix = "labelmap volume" if suffix == ".seg.nrrd" else "single-channel"
    with raises_for(tmp_path / f"rgb{suffix}", VolumeReadError, match="3 values per voxel") as info:
        read_volume(tmp_path / f"rgb{suffix}")
    assert expected_fix in info.value.fix


@pytest.mark.parametrize(
    ("change", "word"),
    [
        ({"array": np.zeros((6, 10, 11), np.uint8)}, "size"),
        ({"spacing_zyx": (2.5, 0.8, 0.7)}, "spacing"),
        ({"origin_xyz": (-12.5, 30.25, 101.0)}, "origin"),
        ({"direction": (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)}, "direction"),
    ],
)
def test_label_geometry_mismatch(tmp_path, ct_volume, label_volume, change, word):
    array = change.pop("array", label_volume.array)
    other = label_volume.with_array(array, **change)
    path = tmp_path / "seg.nii.gz"
    write_labels(other, path)
    with raises_for(path, GeometryMismatchError, match=rf"does not lie on its image's voxel grid.*{word}") as info:
        read_labels(path, reference=ct_volume)
    assert "resample_like" in info.value.fix
    # The same mismatch is refused on write, and nothing is written.
    target = tmp_path / "out.nii.gz"
    with raises_for(target, GeometryMismatchError, match=word):
        write_labels(other, target, reference=ct_volume)
    assert not target.exists()


def test_label_values_outside_the_class_map(tmp_path, ct_volume, label_volume):
    labels = label_volume.array.copy()
    labels[0, 0, 0], labels[0, 0, 1] = 14, 20
    path = write_labels(labels, tmp_path / "seg.nii.gz", reference=ct_volume)
    btcv = LabelMap.preset("btcv13")
    with raises_for(path, LabelValueError, match=r"value\(s\) 14, 20 not in the class map btcv13"):
        read_labels(path, labelmap=btcv)
    assert read_labels(path).array.max() == 20  # without a class map the file itself is fine
    with raises_for(tmp_path / "out.nii.gz", LabelValueError, match="14, 20"):
        write_labels(labels, tmp_path / "out.nii.gz", reference=ct_volume, labelmap=btcv)
    assert not (tmp_path / "out.nii.gz").exists()


@pytest.mark.parametrize(
    ("bad_value", "match"),
    [(0.5, "fractional values"), (np.nan, "NaN/inf"), (-2.0, "negative value -2")],
)
def test_bad_label_voxels(tmp_path, ct_volume, bad_value, match):
    """Float labels in NRRD (NIfTI NaN labels are refused on read like NaN images)."""
    labels = np.zeros(ct_volume.shape, np.float32)
    labels[1, 1, 1] = 1.0
    labels[2, 2, 2] = bad_value
    path = write_image(ct_volume.with_array(labels), tmp_path / "soft.nrrd") if not np.isnan(bad_value) else None
    if path is None:  # write_image refuses NaN, so make the file directly
        path = tmp_path / "soft.nrrd"
        sitk.WriteImage(ct_volume.with_array(labels).to_sitk(), str(path))
    with raises_for(path, LabelValueError, match=match):
        read_labels(path)
    with raises_for(tmp_path / "out.nii.gz", LabelValueError, match=match):
        write_labels(labels, tmp_path / "out.nii.gz", reference=ct_volume)
    assert not (tmp_path / "out.nii.gz").exists()


def test_whole_number_float_labels_are_accepted(tmp_path, ct_volume, label_volume):
    path = write_labels(label_volume.array.astype(np.float64), tmp_path / "seg.nii.gz", reference=ct_volume)
    np.testing.assert_array_equal(read_labels(path).array, label_volume.array)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_image(tmp_path, ct_volume, bad):
    image = ct_volume.array.astype(np.float32)
    image[3, 4, 5] = bad
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(ct_volume.with_array(image).to_sitk(), str(path))
    with raises_for(path, VolumeReadError, match=r"contains 1 NaN/inf voxel"):
        read_volume(path)
    with raises_for(tmp_path / "out.nii.gz", VolumeWriteError, match="NaN/inf"):
        write_image(ct_volume.with_array(image), tmp_path / "out.nii.gz")
    assert not (tmp_path / "out.nii.gz").exists()


def test_unsupported_write_format_writes_nothing(tmp_path, ct_volume):
    with raises_for(tmp_path / "ct.png", VolumeWriteError, match="cannot write format '.png'"):
        write_image(ct_volume, tmp_path / "ct.png")
    assert list(tmp_path.iterdir()) == []


def test_bare_array_needs_a_reference(tmp_path, label_volume):
    with pytest.raises(TypeError, match="reference"):
        write_labels(label_volume.array, tmp_path / "seg.nii.gz")


@pytest.mark.parametrize("suffix", [".nii.gz", ".mhd"])
def test_failing_write_keeps_the_old_file_and_leaves_no_temp_files(tmp_path, monkeypatch, ct_volume, label_volume, suffix):
    target = write_labels(label_volume, tmp_path / f"seg{suffix}", reference=ct_volume)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def half_write_then_fail(image, tmp):
        tmp.write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(formats, "_execute_write", half_write_then_fail)
    changed = label_volume.with_array(np.ones_like(label_volume.array))
    with pytest.raises(OSError, match="No space left"):
        write_labels(changed, target, reference=ct_volume)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # same files (no temp left), same bytes
    monkeypatch.undo()
    np.testing.assert_array_equal(read_labels(target).array, label_volume.array)


def test_itk_write_error_becomes_a_clear_error(tmp_path, monkeypatch, ct_volume):
    class FailingWriter:
        def SetFileName(self, name): ...
        def SetUseCompression(self, flag): ...
        def Execute(self, image):
            raise RuntimeError("Exception thrown in ImageFileWriter\nsitk::ERROR: could not open file for writing")

    monkeypatch.setattr(formats.sitk, "ImageFileWriter", FailingWriter)
    with pytest.raises(VolumeWriteError, match="could not open file for writing"):
        write_image(ct_volume, tmp_path / "ct.nii.gz")
    assert list(tmp_path.iterdir()) == []
