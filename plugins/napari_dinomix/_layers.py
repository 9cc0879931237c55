"""Volume <-> napari layer data: geometry, CT windows and fixed class colours.

napari places data axis k at world coordinate ``scale[k] * index[k] + translate[k]``, then
applies the layer ``affine``. A :class:`~dinomix_core.io.Volume` keeps ITK's geometry
(origin and direction in (x, y, z) order, LPS mm). Everything here speaks napari's order,
(z, y, x) in mm, so an image and its labels land on the same world voxels and a voxel's
world coordinate is SimpleITK's ``TransformIndexToPhysicalPoint`` reversed.

The exact ITK geometry also travels in ``metadata["dinomix_geometry"]``: a napari
round trip through floats must not shift the labels a writer saves back onto the image.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.transforms import Affine

from dinomix_core.io import WINDOW_PRESETS, DinomixInputError, LabelMap, Volume
from dinomix_core.io.windowing import window_bounds

GEOMETRY_KEY = "dinomix_geometry"
SOURCE_KEY = "dinomix_source"
CLASSES_KEY = "dinomix_classes"
DEFAULT_WINDOW = "abdomen"
# Display names of the CT window presets, in WINDOW_PRESETS order (Abdomen first: the default).
WINDOW_NAMES: tuple[str, ...] = tuple(key.replace("_", " ").capitalize() for key in WINDOW_PRESETS)
# Colour of label values the class map does not define: visible, so a stray value is noticed.
UNKNOWN_LABEL_RGBA = (0.6, 0.6, 0.6, 1.0)
_IDENTITY = np.eye(3)


LAYER_TAG = "dinomix_role"  # metadata key telling the session's layers apart from the user's own


def geometry_kwargs(volume: Volume) -> dict:
    """napari ``scale``/``translate``/``affine`` placing ``volume`` in world (z, y, x) mm.

    ``scale`` is always the spacing (z, y, x) mm, so napari's scale bar and brush sizes stay
    in voxels of the right size. With an identity direction the origin goes in
    ``translate``; otherwise a 4x4 ``affine`` carries the rotation/flip and the origin.
    """
    spacing = np.asarray(volume.spacing_zyx, dtype=float)
    origin_zyx = np.asarray(volume.origin_xyz[::-1], dtype=float)
    kwargs: dict[str, Any] = {"scale": tuple(spacing), "units": ("mm", "mm", "mm"), "axis_labels": ("z", "y", "x")}
    rotation = _direction_zyx(volume.direction)
    if np.allclose(rotation, _IDENTITY, atol=1e-9):
        kwargs["translate"] = tuple(origin_zyx)
        return kwargs
    affine = np.eye(4)
    affine[:3, :3] = rotation
    affine[:3, 3] = origin_zyx
    kwargs["translate"] = (0.0, 0.0, 0.0)
    kwargs["affine"] = affine
    return kwargs


def retarget_layer(layer, data, kwargs: dict) -> None:
    """Give an existing layer another volume's ``data`` (None: keep its data), name, metadata
    and geometry, as ``image_layer_data`` / ``labels_layer_data`` ``kwargs`` describe them.

    The affine is always checked (identity when ``kwargs`` has none), so a rotated case does
    not leave its rotation on the next one. Only what differs is set: napari refreshes the
    layer on every geometry assignment, equal or not (40 ms more per prediction shown).
    """
    if data is not None:
        layer.data = data
    if not np.allclose(layer.scale, kwargs["scale"]):
        layer.scale = kwargs["scale"]
    if not np.allclose(layer.translate, kwargs["translate"]):
        layer.translate = kwargs["translate"]
    affine = np.asarray(kwargs.get("affine", np.eye(4)), dtype=float)
    if not np.allclose(layer.affine.affine_matrix, affine):
        layer.affine = affine
    layer.name = kwargs["name"]
    layer.metadata = kwargs.get("metadata", {})


def _direction_zyx(direction: tuple[float, ...]) -> np.ndarray:
    """ITK's 3x3 direction (columns = x, y, z index axes in x, y, z world) re-expressed in (z, y, x)."""
    return np.reshape(np.asarray(direction, dtype=float), (3, 3))[::-1, ::-1]


def window_limits(preset: str | tuple[float, float] = DEFAULT_WINDOW) -> tuple[float, float]:
    """(low, high) HU of a CT window: a preset name (``"abdomen"``, ``"Soft tissue"``) or (width, level)."""
    low, high = window_bounds(preset)
    return float(low), float(high)


def labelmap_colormap(labelmap: LabelMap) -> DirectLabelColormap:
    """napari colormap with the class map's fixed colours; 0 transparent, unknown values grey."""
    colors = labelmap.color_dict(with_default=True)
    colors[None] = UNKNOWN_LABEL_RGBA
    return DirectLabelColormap(color_dict=colors, background_value=0)


def geometry_metadata(volume: Volume) -> dict:
    """The exact ITK geometry as JSON-friendly lists (shape and spacing (z, y, x), mm)."""
    return {
        "shape_zyx": [int(n) for n in volume.shape],
        "spacing_zyx": [float(s) for s in volume.spacing_zyx],
        "origin_xyz": [float(o) for o in volume.origin_xyz],
        "direction": [float(d) for d in volume.direction],
    }


def image_layer_data(volume: Volume, name: str | None = None) -> tuple:
    """(data, kwargs, "image") for a CT volume (z, y, x) in HU: grey, Abdomen window, world mm."""
    source = str(volume.source) if volume.source else ""
    kwargs = {
        "name": name or _name_from_source(volume.source, "CT"),
        "colormap": "gray",
        "contrast_limits": window_limits(DEFAULT_WINDOW),
        "metadata": {GEOMETRY_KEY: geometry_metadata(volume), SOURCE_KEY: source},
        **geometry_kwargs(volume),
    }
    return volume.array, kwargs, "image"


def labels_layer_data(labels: Volume | np.ndarray, labelmap: LabelMap, name: str | None = None,
                      reference: Volume | None = None) -> tuple:
    """(data, kwargs, "labels") for a label map (z, y, x), on ``reference``'s grid when given.

    The data are uint8 (the class maps have < 256 classes); a bare array needs ``reference``.
    """
    grid = reference if reference is not None else labels
    if not isinstance(grid, Volume):
        raise TypeError("labels_layer_data(array, ...) needs reference=<image Volume> to know the geometry")
    array = labels.array if isinstance(labels, Volume) else np.asarray(labels)
    if tuple(array.shape) != grid.shape:
        raise DinomixInputError(getattr(labels, "source", None),
                                f"labels of shape (z, y, x) {tuple(array.shape)} do not fit the image's {grid.shape}.",
                                "Pass the label map drawn or predicted on this image.")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise DinomixInputError(getattr(labels, "source", None),
                                f"label values span {array.min()}..{array.max()}; a class map holds 0..255.",
                                "Relabel the map with consecutive class values from 0.")
    source = getattr(labels, "source", None)
    kwargs = {
        "name": name or _name_from_source(source, "labels"),
        "colormap": labelmap_colormap(labelmap),
        "opacity": 0.5,
        "metadata": {GEOMETRY_KEY: geometry_metadata(grid), SOURCE_KEY: str(source or ""),
                     CLASSES_KEY: labelmap.to_dataset_json_dict()},
        **geometry_kwargs(grid),
    }
    return array.astype(np.uint8, copy=False), kwargs, "labels"


def volume_from_layer_data(data, meta_or_attributes, modality: str = "labels") -> Volume:
    """A Volume of layer ``data`` (z, y, x) with its exact geometry (mm).

    ``meta_or_attributes`` is a layer's ``metadata``, the ``attributes`` napari hands a writer
    (``metadata``, ``scale``, ``translate``, ``affine``...), or a napari layer. The geometry
    comes from ``dinomix_geometry`` when present, else from the layer transforms.
    """
    attributes = _attributes(meta_or_attributes)
    array = np.asarray(data)
    if array.ndim != 3:
        raise DinomixInputError(None, f"the layer holds {array.ndim}D data of shape {array.shape}; a (z, y, x) volume is needed.",
                                "Save a 3D labels layer drawn on a CT volume.")
    metadata = attributes.get("metadata") or {}
    stored = metadata.get(GEOMETRY_KEY) if isinstance(metadata, Mapping) else None
    if stored is not None:
        if tuple(stored.get("shape_zyx", array.shape)) != tuple(array.shape):
            raise DinomixInputError(None, f"the layer data (z, y, x) {array.shape} no longer match its image's grid "
                                    f"{tuple(stored['shape_zyx'])}.", "Draw the labels on a layer of the image's size.")
        geometry = {k: tuple(stored[k]) for k in ("spacing_zyx", "origin_xyz", "direction")}
    else:
        geometry = _geometry_from_transforms(attributes)
    source = metadata.get(SOURCE_KEY) if isinstance(metadata, Mapping) else None
    return Volume(array, **geometry, source=Path(source) if source else None, modality=modality)


def generic_labelmap(array: np.ndarray, title: str = "") -> LabelMap:
    """Placeholder class names ``label_1..label_N`` for a label map that came without any."""
    top = max(int(array.max()) if array.size else 0, 1)
    return LabelMap(["background", *(f"label_{v}" for v in range(1, top + 1))], title=title)


def labelmap_from_attributes(meta_or_attributes) -> LabelMap | None:
    """The class map a labels layer carries (``dinomix_classes``), or None."""
    metadata = _attributes(meta_or_attributes).get("metadata") or {}
    classes = metadata.get(CLASSES_KEY) if isinstance(metadata, Mapping) else None
    return LabelMap.from_dataset_json(classes) if classes else None


def _attributes(meta_or_attributes) -> dict:
    """Normalise a layer, a writer's attributes or a bare metadata dict to attributes."""
    if hasattr(meta_or_attributes, "as_layer_data_tuple"):  # a napari layer
        return dict(meta_or_attributes.as_layer_data_tuple()[1])
    if not isinstance(meta_or_attributes, Mapping):
        raise TypeError(f"expected layer metadata or attributes, got {type(meta_or_attributes).__name__}")
    if GEOMETRY_KEY in meta_or_attributes or CLASSES_KEY in meta_or_attributes or SOURCE_KEY in meta_or_attributes:
        return {"metadata": dict(meta_or_attributes)}
    return dict(meta_or_attributes)


def _geometry_from_transforms(attributes: dict) -> dict:
    """ITK geometry from napari's data-to-world transform (scale, translate, rotate, shear, affine)."""
    physical = Affine(scale=attributes.get("scale", (1.0,) * 3), translate=attributes.get("translate", (0.0,) * 3),
                      rotate=attributes.get("rotate"), shear=attributes.get("shear"), ndim=3).affine_matrix
    extra = np.asarray(attributes.get("affine", np.eye(4)), dtype=float)
    if extra.shape != (4, 4):
        raise DinomixInputError(None, f"the layer affine has shape {extra.shape}, not (4, 4) for a 3D volume.",
                                "Save a 3D layer.")
    full = extra @ physical
    linear, offset = full[:3, :3], full[:3, 3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0):
        raise DinomixInputError(None, "the layer transform collapses an axis (zero scale).", "Reset the layer's scale.")
    rotation_zyx = linear / spacing
    direction = rotation_zyx[::-1, ::-1]
    return {"spacing_zyx": tuple(spacing), "origin_xyz": tuple(offset[::-1]), "direction": tuple(direction.ravel())}


def _name_from_source(source, fallback: str) -> str:
    if not source:
        return fallback
    path = Path(source)
    name = path.name
    for suffix in (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
