"""The npe2 writers: labels saved with their image's exact geometry, class names beside them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from napari.layers import Labels

from dinomix_core.io import LabelMap, LabelValueError, read_labels
from napari_dinomix._layers import labels_layer_data
from napari_dinomix._reader import get_reader
from napari_dinomix._writer import write_labels_nifti, write_labels_segnrrd


@pytest.fixture
def btcv():
    return LabelMap.preset("btcv13")


@pytest.fixture
def layer_tuple(oblique_ct, oblique_labels, btcv):
    return labels_layer_data(oblique_labels, btcv, name="organs", reference=oblique_ct)


def _attributes(layer_tuple):
    """What napari hands a writer: the state of a real Labels layer."""
    data, kwargs, _ = layer_tuple
    return Labels(data, **kwargs).as_layer_data_tuple()[1]


def test_nifti_round_trip_keeps_voxels_geometry_and_classes(tmp_path, layer_tuple, oblique_ct, btcv):
    data, _, _ = layer_tuple
    written = write_labels_nifti(str(tmp_path / "organs.nii.gz"), data, _attributes(layer_tuple))
    assert written == [str(tmp_path / "organs.nii.gz"), str(tmp_path / "dataset.json")]
    back = read_labels(tmp_path / "organs.nii.gz", reference=oblique_ct, labelmap=btcv)
    np.testing.assert_array_equal(back.array, data)
    # NIfTI keeps geometry as float32: equal to that precision (read_labels already checked the grid)
    np.testing.assert_allclose(back.spacing_zyx, oblique_ct.spacing_zyx, rtol=1e-6)
    np.testing.assert_allclose(back.origin_xyz, oblique_ct.origin_xyz, rtol=1e-6)
    np.testing.assert_allclose(back.direction, oblique_ct.direction, atol=1e-6)
    assert sitk.ReadImage(str(tmp_path / "organs.nii.gz")).GetPixelID() == sitk.sitkUInt8
    assert LabelMap.from_dataset_json(tmp_path / "dataset.json").names == btcv.names
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_nifti_suffix_is_added_when_missing(tmp_path, layer_tuple):
    written = write_labels_nifti(str(tmp_path / "organs"), layer_tuple[0], layer_tuple[1])
    assert written[0] == str(tmp_path / "organs.nii.gz")


def test_existing_dataset_json_with_other_classes_is_not_overwritten(tmp_path, layer_tuple):
    theirs = {"labels": {"background": 0, "tumour": 1}, "numTraining": 40}
    (tmp_path / "dataset.json").write_text(json.dumps(theirs))
    written = write_labels_nifti(str(tmp_path / "organs.nii.gz"), layer_tuple[0], layer_tuple[1])
    assert json.loads((tmp_path / "dataset.json").read_text()) == theirs
    assert written[1] == str(tmp_path / "organs.dataset.json")
    assert json.loads((tmp_path / "organs.dataset.json").read_text())["labels"]["liver"] == 6
    # and the reader finds the file's own class names, not the folder's
    [(_, kwargs, kind)] = get_reader(written[0])(written[0])
    assert kind == "labels" and kwargs["metadata"]["dinomix_classes"]["labels"]["liver"] == 6


def test_existing_dataset_json_with_the_same_classes_is_kept_as_is(tmp_path, layer_tuple, btcv):
    ours = {**btcv.to_dataset_json_dict(), "numTraining": 7, "description": "kept"}
    (tmp_path / "dataset.json").write_text(json.dumps(ours))
    written = write_labels_nifti(str(tmp_path / "organs.nii.gz"), layer_tuple[0], layer_tuple[1])
    assert written == [str(tmp_path / "organs.nii.gz")]
    assert json.loads((tmp_path / "dataset.json").read_text()) == ours


def test_segnrrd_round_trip_keeps_segment_names_and_colours(tmp_path, layer_tuple, oblique_ct, btcv):
    data = layer_tuple[0]
    written = write_labels_segnrrd(str(tmp_path / "organs.seg.nrrd"), data, _attributes(layer_tuple))
    assert written == [str(tmp_path / "organs.seg.nrrd")]
    back = read_labels(tmp_path / "organs.seg.nrrd", reference=oblique_ct)
    np.testing.assert_array_equal(back.array, data)
    assert back.meta["labelmap"].names == btcv.names
    assert back.meta["labelmap"].colors == btcv.colors
    header = sitk.ReadImage(str(tmp_path / "organs.seg.nrrd"))
    assert header.GetMetaData("Segment5_Name") == "liver" and header.GetMetaData("Segment5_LabelValue") == "6"


def test_layer_drawn_in_napari_without_metadata_is_written_on_its_grid(tmp_path, oblique_ct):
    labels = np.zeros(oblique_ct.shape, np.uint8)
    labels[2:4, 3:6, 4:8] = 2
    attrs = {"scale": (2.5, 0.8, 0.6), "translate": (100.0, 30.25, -12.5), "metadata": {}}
    written = write_labels_nifti(str(tmp_path / "drawn.nii.gz"), labels, attrs)
    back = read_labels(written[0])
    np.testing.assert_array_equal(back.array, labels)
    assert back.spacing_zyx == pytest.approx((2.5, 0.8, 0.6)) and back.origin_xyz == pytest.approx((-12.5, 30.25, 100.0))
    assert LabelMap.from_dataset_json(tmp_path / "dataset.json").names == ["background", "label_1", "label_2"]


def test_values_outside_the_class_map_are_refused_and_nothing_is_written(tmp_path, layer_tuple):
    data, kwargs, _ = layer_tuple
    bad = data.copy()
    bad[0, 0, 0] = 40  # btcv13 stops at 13
    with pytest.raises(LabelValueError, match="40"):
        write_labels_nifti(str(tmp_path / "bad.nii.gz"), bad, kwargs)
    assert list(tmp_path.iterdir()) == []
