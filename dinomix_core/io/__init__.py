"""CT volume I/O: read/write images and label maps with their geometry, class maps, windows.

Arrays are (z, y, x); spacing and origin are in mm. Only this package touches image files.
"""

from .dataset_json import load_dataset_json, write_dataset_json
from .errors import DinomixInputError, GeometryMismatchError, LabelValueError, VolumeReadError, VolumeWriteError
from .formats import FILE_SUFFIXES, ReaderWriter, reader_writer_for
from .hashing import content_hash
from .labelmap import LabelMap
from .readers import read_labels, read_volume
from .resample import resample_like, resample_to_spacing
from .volume import Volume
from .windowing import DHC_CLIP_HU, WINDOW_PRESETS, clip_normalize, window, zscore
from .writers import write_image, write_labels

__all__ = [
    "DHC_CLIP_HU",
    "FILE_SUFFIXES",
    "WINDOW_PRESETS",
    "DinomixInputError",
    "GeometryMismatchError",
    "LabelMap",
    "LabelValueError",
    "ReaderWriter",
    "Volume",
    "VolumeReadError",
    "VolumeWriteError",
    "clip_normalize",
    "content_hash",
    "load_dataset_json",
    "read_labels",
    "read_volume",
    "reader_writer_for",
    "resample_like",
    "resample_to_spacing",
    "window",
    "write_dataset_json",
    "write_image",
    "write_labels",
    "zscore",
]
