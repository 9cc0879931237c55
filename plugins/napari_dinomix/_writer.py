"""npe2 writers: a labels layer as NIfTI (+ dataset.json) or as a 3D Slicer ``.seg.nrrd``.

The labels get their image's exact geometry from the layer metadata written by
``labels_layer_data`` (napari's float scale/translate only as a fallback), so a saved mask
overlays its CT voxel for voxel in any other tool. All writes are atomic
(:mod:`dinomix_core.io`): a crash never leaves a half-written file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from dinomix_core.io import DinomixInputError, LabelMap, write_dataset_json, write_labels
from dinomix_core.io.formats import suffix_of

from ._layers import generic_labelmap, labelmap_from_attributes, volume_from_layer_data

log = logging.getLogger(__name__)


def write_labels_nifti(path: str, data, attributes: dict) -> list[str]:
    """Write labels (z, y, x) as compressed uint8 NIfTI and the class names in a dataset.json beside.

    An existing ``dataset.json`` naming other classes is kept; the classes then go to
    ``<name>.dataset.json`` (which the reader also looks for). Returns the written paths.
    """
    target = _with_suffix(Path(path), (".nii.gz", ".nii"), ".nii.gz")
    volume, labelmap = _labels_and_classes(target, data, attributes)
    write_labels(volume, target, labelmap=labelmap)
    written = [str(target)]
    classes_file = _write_classes(target, labelmap)
    if classes_file is not None:
        written.append(str(classes_file))
    return written


def write_labels_segnrrd(path: str, data, attributes: dict) -> list[str]:
    """Write labels (z, y, x) as a 3D Slicer segmentation with segment names and colours."""
    target = _with_suffix(Path(path), (".seg.nrrd",), ".seg.nrrd")
    volume, labelmap = _labels_and_classes(target, data, attributes)
    write_labels(volume, target, labelmap=labelmap)
    return [str(target)]


def _labels_and_classes(target: Path, data, attributes: dict):
    array = np.asarray(data)
    if array.dtype.kind not in "iub":
        raise DinomixInputError(target, f"the layer holds {array.dtype} values, not class labels.",
                                "Save a labels layer (integer class values).")
    volume = volume_from_layer_data(array, attributes, modality="SEG")
    labelmap = labelmap_from_attributes(attributes)
    if labelmap is None:  # a layer drawn in napari without a class map: name the values it holds
        labelmap = generic_labelmap(array)
        log.info("%s: the layer carries no class names; writing %s", target, ", ".join(labelmap.names[1:]))
    return volume, labelmap


def _write_classes(target: Path, labelmap: LabelMap) -> Path | None:
    """dataset.json beside the labels, unless one naming the same classes is already there."""
    doc = labelmap.to_dataset_json_dict()
    shared = target.parent / "dataset.json"
    if not shared.exists():
        return write_dataset_json(shared, doc)
    try:
        existing = json.loads(shared.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        existing = None
    if isinstance(existing, dict) and existing.get("labels") == doc["labels"]:
        return None  # same classes: the user's file (maybe with more nnU-Net fields) stays as it is
    own = target.parent / f"{target.name[: -len(suffix_of(target))]}.dataset.json"
    log.warning("%s names other classes; the classes of %s go to %s", shared, target.name, own.name)
    return write_dataset_json(own, doc)


def _with_suffix(path: Path, accepted: tuple[str, ...], default: str) -> Path:
    name = path.name.lower()
    return path if any(name.endswith(s) for s in accepted) else path.with_name(path.name + default)
