"""Volume <-> napari layer: world geometry (mm), windows, class colours, metadata round trip."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _plugin_data import oblique_direction
from napari.layers import Image, Labels
from napari.utils.colormaps import DirectLabelColormap

from dinomix_core.io import DinomixInputError, LabelMap, Volume
from napari_dinomix._layers import (WINDOW_NAMES, geometry_kwargs, image_layer_data, labelmap_colormap,
                                    labels_layer_data, volume_from_layer_data, window_limits)


def _corners(shape):
    return [np.array(c) for c in itertools.product(*[(0, n - 1) for n in shape])] + [np.array(shape) // 2]


@pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")  # napari, for the permuted grid
@pytest.mark.parametrize("direction", [
    oblique_direction(30.0, flip_xy=True),
    oblique_direction(0.0, flip_xy=True),  # LPS <-> RAS flip, the common case
    (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0),  # permuted axes (sagittal stack)
], ids=["rotated_flipped", "flipped", "permuted"])
def test_world_coordinate_is_itk_physical_point_reversed(direction):
    volume = Volume(np.zeros((6, 10, 12), np.int16), (2.5, 0.8, 0.6), (-12.5, 30.25, 100.0), direction)
    data, kwargs, kind = image_layer_data(volume)
    layer = Image(data, **kwargs)
    assert "affine" in kwargs
    assert tuple(layer.scale) == pytest.approx((2.5, 0.8, 0.6))
    image = volume.to_sitk()
    for idx in _corners(volume.shape):
        expected = image.TransformIndexToPhysicalPoint([int(i) for i in idx[::-1]])[::-1]
        np.testing.assert_allclose(layer.data_to_world(idx), expected, atol=1e-9)


def test_identity_direction_uses_scale_and_translate_only():
    volume = Volume(np.zeros((4, 5, 6), np.int16), (5.0, 4.0, 3.0), (-190.0, -180.0, -117.5))
    kwargs = geometry_kwargs(volume)
    assert "affine" not in kwargs
    assert kwargs["scale"] == (5.0, 4.0, 3.0)
    assert kwargs["translate"] == (-117.5, -180.0, -190.0)  # origin (x, y, z) reversed to (z, y, x)
    layer = Image(volume.array, **kwargs)
    expected = volume.to_sitk().TransformIndexToPhysicalPoint((5, 4, 3))[::-1]
    np.testing.assert_allclose(layer.data_to_world((3, 4, 5)), expected)


def test_image_and_labels_line_up_voxel_for_voxel(oblique_ct, oblique_labels):
    lm = LabelMap.preset("btcv13")
    data, kwargs, _ = image_layer_data(oblique_ct)
    image = Image(data, **kwargs)
    data, kwargs, _ = labels_layer_data(oblique_labels, lm, reference=oblique_ct)
    labels = Labels(data, **kwargs)
    for idx in _corners(oblique_ct.shape):
        np.testing.assert_allclose(image.data_to_world(idx), labels.data_to_world(idx), atol=1e-12)
    # and a world point maps back to the same voxel in both
    point = image.data_to_world((3, 7, 9))
    np.testing.assert_allclose(labels.world_to_data(point), (3, 7, 9), atol=1e-9)


def test_image_layer_data_is_grey_in_the_abdomen_window(oblique_ct):
    oblique_ct.source = None
    data, kwargs, kind = image_layer_data(oblique_ct, name="ct")
    assert kind == "image" and data is oblique_ct.array
    assert kwargs["colormap"] == "gray"
    assert kwargs["contrast_limits"] == (-135.0, 215.0)  # W350 / L40
    geometry = kwargs["metadata"]["dinomix_geometry"]
    assert geometry["spacing_zyx"] == [2.5, 0.8, 0.6]
    assert geometry["origin_xyz"] == [-12.5, 30.25, 100.0]
    assert geometry["direction"] == list(oblique_ct.direction)
    assert kwargs["metadata"]["dinomix_source"] == ""


def test_window_presets():
    assert WINDOW_NAMES == ("Abdomen", "Bone", "Lung", "Soft tissue", "Brain")
    assert window_limits() == (-135.0, 215.0)
    assert window_limits("Bone") == (-100.0, 900.0)
    assert window_limits("Lung") == (-1200.0, 200.0)
    assert window_limits("Soft tissue") == (-160.0, 240.0)
    assert window_limits("Brain") == (0.0, 100.0)
    assert window_limits((400, 50)) == (-150.0, 250.0)
    with pytest.raises(KeyError, match="unknown window preset"):
        window_limits("liver")


def test_labelmap_colormap_has_fixed_colours_and_a_default():
    lm = LabelMap.preset("btcv13")
    cmap = labelmap_colormap(lm)
    assert isinstance(cmap, DirectLabelColormap)
    np.testing.assert_allclose(cmap.color_dict[0], (0, 0, 0, 0))  # background transparent
    for value in (1, 6, 13):
        np.testing.assert_allclose(cmap.color_dict[value], (*(c / 255 for c in lm.colors[value]), 1.0), atol=1e-6)
    assert None in cmap.color_dict
    mapped = cmap.map(np.array([0, 6, 77], dtype=np.uint8))
    np.testing.assert_allclose(mapped[1], cmap.color_dict[6], atol=1e-6)
    assert mapped[2][3] == 1.0  # a value outside the map is drawn, not hidden


def test_labels_layer_data_carries_classes_and_geometry(oblique_ct, oblique_labels):
    lm = LabelMap.preset("btcv13")
    data, kwargs, kind = labels_layer_data(oblique_labels.array.astype(np.int64), lm, name="organs",
                                           reference=oblique_ct)
    assert kind == "labels" and data.dtype == np.uint8
    np.testing.assert_array_equal(data, oblique_labels.array)
    assert kwargs["name"] == "organs"
    assert kwargs["metadata"]["dinomix_geometry"] == image_layer_data(oblique_ct)[1]["metadata"]["dinomix_geometry"]
    back = LabelMap.from_dataset_json(kwargs["metadata"]["dinomix_classes"])
    assert back.names == lm.names and back.colors == lm.colors
    np.testing.assert_allclose(kwargs["affine"], image_layer_data(oblique_ct)[1]["affine"])
    with pytest.raises(DinomixInputError, match=r"do not fit the image's \(6, 10, 12\)"):
        labels_layer_data(np.zeros((6, 10, 11), np.uint8), lm, reference=oblique_ct)
    with pytest.raises(TypeError, match="reference"):
        labels_layer_data(np.zeros((6, 10, 12), np.uint8), lm)


def test_volume_from_layer_data_restores_exact_geometry(oblique_ct, oblique_labels):
    lm = LabelMap.preset("btcv13")
    data, kwargs, _ = labels_layer_data(oblique_labels, lm, reference=oblique_ct)
    layer = Labels(data, **kwargs)
    attributes = layer.as_layer_data_tuple()[1]
    for source in (kwargs["metadata"], attributes, layer):
        back = volume_from_layer_data(layer.data, source)
        assert back.spacing_zyx == oblique_ct.spacing_zyx  # bit for bit from the metadata
        assert back.origin_xyz == oblique_ct.origin_xyz
        assert back.direction == oblique_ct.direction
        np.testing.assert_array_equal(back.array, oblique_labels.array)
        assert back.modality == "labels"
    # Without the metadata (a layer made in napari) the transforms give the same grid within float error.
    attributes = {k: v for k, v in attributes.items() if k != "metadata"}
    assert volume_from_layer_data(layer.data, attributes).same_grid(oblique_ct, atol=1e-9)
    identity = Volume(np.zeros((3, 4, 5), np.uint8), (5.0, 4.0, 3.0), (1.0, 2.0, 3.0))
    plain = {"scale": (5.0, 4.0, 3.0), "translate": (3.0, 2.0, 1.0)}
    assert volume_from_layer_data(identity.array, plain).same_grid(identity)


def test_volume_from_layer_data_refuses_data_that_no_longer_fit(oblique_ct):
    meta = image_layer_data(oblique_ct)[1]["metadata"]
    with pytest.raises(DinomixInputError, match=r"no longer match its image's grid \(6, 10, 12\)"):
        volume_from_layer_data(np.zeros((6, 10, 5), np.uint8), meta)
    with pytest.raises(DinomixInputError, match="2D data"):
        volume_from_layer_data(np.zeros((10, 5), np.uint8), meta)
