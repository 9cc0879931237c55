"""The npe2 reader: CT files, DICOM series under any names, label maps as Labels layers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from _plugin_data import NAMINGS, series_hu, write_ct_series

from dinomix_core.io import DinomixInputError, LabelMap, read_volume, write_image, write_labels
from napari_dinomix._reader import get_reader


def _read(path):
    reader = get_reader(str(path))
    assert callable(reader), f"no reader for {path}"
    return reader(str(path))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_image_files_open_as_ct_in_world_mm(tmp_path, oblique_ct, suffix):
    path = write_image(oblique_ct, tmp_path / f"ct{suffix}")
    [(data, kwargs, kind)] = _read(path)
    assert kind == "image"
    np.testing.assert_array_equal(data, oblique_ct.array)
    assert kwargs["name"] == "ct"
    assert kwargs["contrast_limits"] == (-135.0, 215.0)
    assert kwargs["scale"] == pytest.approx(oblique_ct.spacing_zyx)
    np.testing.assert_allclose(kwargs["metadata"]["dinomix_geometry"]["direction"], oblique_ct.direction, atol=1e-6)
    assert kwargs["metadata"]["dinomix_source"] == str(path)


def test_label_map_with_dataset_json_opens_as_labels_with_its_classes(tmp_path, oblique_ct, oblique_labels):
    lm = LabelMap.preset("btcv13")
    path = write_labels(oblique_labels, tmp_path / "case_001.nii.gz", labelmap=lm)
    (tmp_path / "dataset.json").write_text(json.dumps(lm.to_dataset_json_dict()))
    [(data, kwargs, kind)] = _read(path)
    assert kind == "labels" and data.dtype == np.uint8
    np.testing.assert_array_equal(data, oblique_labels.array)
    assert kwargs["metadata"]["dinomix_classes"]["labels"]["liver"] == 6
    np.testing.assert_allclose(kwargs["colormap"].color_dict[6][:3], np.array(lm.colors[6]) / 255, atol=1e-6)


def test_label_map_is_recognised_without_class_names(tmp_path, oblique_labels):
    # uint8 file, no dataset.json: still clearly a label map, with placeholder names
    path = write_labels(oblique_labels, tmp_path / "mask.nii.gz")
    [(data, kwargs, kind)] = _read(path)
    assert kind == "labels"
    names = kwargs["metadata"]["dinomix_classes"]["labels"]
    assert names["label_13"] == 13 and len(names) == 14
    # int16 labels in an nnU-Net labelsTr folder: recognised by the folder
    folder = tmp_path / "Dataset001" / "labelsTr"
    write_image(oblique_labels.with_array(oblique_labels.array.astype(np.int16)), folder / "case.nii.gz")
    assert _read(folder / "case.nii.gz")[0][2] == "labels"


def test_ct_with_few_values_stays_an_image(tmp_path, oblique_ct):
    # int16, no label hint: small non-negative values alone do not make a label map
    flat = oblique_ct.with_array(np.clip(oblique_ct.array, 0, 40).astype(np.int16))
    path = write_image(flat, tmp_path / "scan.nii.gz")
    assert _read(path)[0][2] == "image"


def test_seg_nrrd_opens_with_segment_names_and_colours(tmp_path, oblique_labels):
    lm = LabelMap(["background", "liver", "tumour"], [(0, 0, 0), (200, 100, 50), (10, 220, 30)])
    labels = oblique_labels.with_array(np.clip(oblique_labels.array, 0, 2))
    path = write_labels(labels, tmp_path / "liver.seg.nrrd", labelmap=lm)
    [(data, kwargs, kind)] = _read(path)
    assert kind == "labels" and kwargs["name"] == "liver"
    assert kwargs["metadata"]["dinomix_classes"]["labels"] == {"background": 0, "liver": 1, "tumour": 2}
    np.testing.assert_allclose(kwargs["colormap"].color_dict[2][:3], (10 / 255, 220 / 255, 30 / 255), atol=1e-3)


@pytest.mark.parametrize("naming", sorted(NAMINGS))
@pytest.mark.parametrize("strip_preamble", [False, True], ids=["preamble", "no_preamble"])
def test_dicom_folder_opens_whatever_the_file_names(tmp_path, naming, strip_preamble):
    hu = series_hu()
    write_ct_series(tmp_path / "series", hu, series_uid="1.2.826.0.1.3680043.8.498.42", naming=naming,
                    strip_preamble=strip_preamble)
    [(data, kwargs, kind)] = _read(tmp_path / "series")
    assert kind == "image"
    np.testing.assert_array_equal(data, hu)
    assert kwargs["scale"] == pytest.approx((2.5, 0.7, 0.8))
    assert kwargs["translate"] == pytest.approx((30.0, -20.0, 10.0))
    assert kwargs["metadata"]["dinomix_series"]["series_uid"] == "1.2.826.0.1.3680043.8.498.42"


def test_single_slice_file_opens_its_series(tmp_path):
    hu = series_hu()
    files = write_ct_series(tmp_path / "s", hu, series_uid="1.2.840.10008.77", naming="sop_uid")
    assert files[2].name == "CT.1.2.840.10008.77.3"
    [(data, _, kind)] = _read(files[2])
    assert kind == "image" and data.shape == (5, 6, 7)
    dcm = write_ct_series(tmp_path / "d", hu, series_uid="1.2.3.4", naming="dcm")
    np.testing.assert_array_equal(_read(dcm[0])[0][0], hu)
    # a selection of several slices of one series gives one layer, not one per file
    layers = get_reader([str(f) for f in files])([str(f) for f in files])
    assert len(layers) == 1


def test_nested_patient_study_series_opens_the_largest_series(tmp_path):
    write_ct_series(tmp_path / "PAT" / "ST1" / "SER_SCOUT", series_hu(3, 500), series_uid="1.2.3.1",
                    naming="im_number")
    write_ct_series(tmp_path / "PAT" / "ST1" / "SER_CT", series_hu(5), series_uid="1.2.3.2", naming="no_extension")
    [(data, kwargs, _)] = _read(tmp_path / "PAT")
    np.testing.assert_array_equal(data, series_hu(5))
    assert kwargs["name"] == "SER_CT"


def test_folder_with_two_series_opens_the_largest_and_says_so(tmp_path):
    write_ct_series(tmp_path / "mixed", series_hu(5), series_uid="1.2.3.100", naming="sop_uid")
    write_ct_series(tmp_path / "mixed", series_hu(3, 500), series_uid="1.2.3.200", naming="sop_uid")
    [(data, kwargs, _)] = _read(tmp_path / "mixed")
    assert data.shape[0] == 5
    series = kwargs["metadata"]["dinomix_series"]
    assert series["series_uid"] == "1.2.3.100" and series["num_series"] == 2
    assert "largest of 2 series" in series["choice"] and "1.2.3.200 (3 files)" in series["choice"]


def test_paths_that_are_not_ours_return_none(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.txt").write_text("x")
    (tmp_path / "README").write_text("no extension, not DICOM")
    for path in ("notes.txt", "plain", "README", "missing.nii.gz"):
        assert get_reader(str(tmp_path / path)) is None, path
    assert get_reader([str(tmp_path / "notes.txt")]) is None


def test_broken_files_of_supported_types_raise_one_line_errors(tmp_path, oblique_ct):
    good = write_image(oblique_ct, tmp_path / "good.nii.gz")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(good.read_bytes()[:200])  # truncated download
    reader = get_reader(str(broken))
    assert reader is not None  # ours: napari must not fall back silently
    with pytest.raises(DinomixInputError) as info:
        reader(str(broken))
    message = str(info.value)
    assert str(broken) in message and "Fix:" in message and "\n" not in message
    bad_dcm = tmp_path / "dcm" / "slice.dcm"
    bad_dcm.parent.mkdir()
    bad_dcm.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x04\x00")  # header cut short
    with pytest.raises(DinomixInputError) as info:
        get_reader(str(bad_dcm))(str(bad_dcm))
    assert info.value.path == str(bad_dcm)  # the damaged slice is named, not its folder
    assert "\n" not in str(info.value) and "Fix:" in str(info.value)


def test_missing_slice_in_a_series_is_reported(tmp_path):
    files = write_ct_series(tmp_path / "gap", series_hu(6), series_uid="1.2.3.9", naming="im_number")
    files[3].unlink()
    with pytest.raises(DinomixInputError, match=r"gap\: slices are unevenly spaced"):
        get_reader(str(tmp_path / "gap"))(str(tmp_path / "gap"))


def test_engine_reads_the_same_series_as_the_reader(tmp_path):
    write_ct_series(tmp_path / "s", series_hu(), series_uid="1.2.3.5", naming="sop_uid", strip_preamble=True)
    volume = read_volume(tmp_path / "s")
    data = _read(tmp_path / "s")[0][0]
    np.testing.assert_array_equal(volume.array, data)
    image = sitk.ReadImage(str(next((tmp_path / "s").iterdir())), imageIO="GDCMImageIO")
    assert image.GetSize()[:2] == (7, 6)
    shutil.rmtree(tmp_path / "s")
