"""Class names and fixed colours for a label map (value -> organ), carried with every label file."""

from __future__ import annotations

import colorsys
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .dataset_json import load_dataset_json
from .errors import DinomixInputError

PRESETS = ("btcv13", "amos15")


@dataclass
class LabelMap:
    """Names and colours of the classes; ``names[v]`` is the class with voxel value ``v``.

    Values are consecutive from 0 (background), as nnU-Net requires; ``num_classes`` counts
    the background. Colours are RGB 0-255; the background is drawn transparent.
    """

    names: list[str]
    colors: list[tuple[int, int, int]] = field(default_factory=list)
    title: str = ""

    def __post_init__(self) -> None:
        names = [str(n) for n in self.names]
        if len(names) < 2:
            raise ValueError("a label map needs the background and at least one class")
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")
        colors = [tuple(int(c) for c in rgb) for rgb in self.colors] or [
            default_color(n, v) for v, n in enumerate(names)
        ]
        if len(colors) != len(names):
            raise ValueError(f"{len(names)} names but {len(colors)} colours")
        if any(len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb) for rgb in colors):
            raise ValueError(f"colours must be RGB triples in 0-255, got {colors}")
        self.names, self.colors = names, colors

    @property
    def values(self) -> list[int]:
        return list(range(len(self.names)))

    @property
    def num_classes(self) -> int:
        """Number of classes including the background."""
        return len(self.names)

    def name_of(self, value: int) -> str:
        if not 0 <= int(value) < len(self.names):
            raise KeyError(f"value {value} is not in label map {self.title or self.names}")
        return self.names[int(value)]

    def value_of(self, name: str) -> int:
        key = _norm(name)
        for value, own in enumerate(self.names):
            if _norm(own) == key:
                return value
        raise KeyError(f"no class named {name!r} in label map {self.title or self.names}")

    def display_name(self, value: int) -> str:
        return self.name_of(value).replace("_", " ")

    def color_dict(self, *, with_default: bool = False) -> dict:
        """``{value: (r, g, b, a)}`` in 0-1, background transparent (napari DirectLabelColormap).

        ``with_default`` adds the ``None`` key napari uses for values missing from the map.
        """
        out = {v: (0.0, 0.0, 0.0, 0.0) if v == 0 else (*(c / 255.0 for c in rgb), 1.0) for v, rgb in enumerate(self.colors)}
        if with_default:
            out[None] = (0.0, 0.0, 0.0, 0.0)
        return out

    def to_dataset_json_dict(self, *, num_training: int = 0, channel_names: dict | None = None,
                             file_ending: str = ".nii.gz", name: str | None = None) -> dict:
        """A complete nnU-Net v2 dataset.json dict for this label map.

        The colours travel in an extra ``"label_colors"`` key (name -> RGB 0-255), which
        nnU-Net ignores and :meth:`from_dataset_json` reads back.
        """
        data = {
            "channel_names": dict(channel_names or {"0": "CT"}),
            "labels": {n: v for v, n in enumerate(self.names)},
            "numTraining": int(num_training),
            "file_ending": file_ending,
            "label_colors": {n: list(rgb) for n, rgb in zip(self.names, self.colors)},
        }
        if name or self.title:
            data["name"] = name or self.title
        return data

    @classmethod
    def from_labels_dict(cls, labels: dict, *, source: str | os.PathLike | None = None, title: str = "") -> "LabelMap":
        """Build from nnU-Net's ``{"background": 0, "spleen": 1, ...}`` mapping."""
        by_value: dict[int, str] = {}
        for name, value in labels.items():
            if isinstance(value, (list, tuple)):
                raise DinomixInputError(source, f"class {name!r} is a region (list of values); region-based labels are not supported.",
                                        "Use one integer value per class in \"labels\".")
            if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
                raise DinomixInputError(source, f"class {name!r} has value {value!r}; values must be integers >= 0.",
                                        'Write "labels" as {"background": 0, "spleen": 1, ...}.')
            if int(value) in by_value:
                raise DinomixInputError(source, f"classes {by_value[int(value)]!r} and {name!r} share value {value}.",
                                        "Give every class its own value.")
            by_value[int(value)] = str(name)
        expected = list(range(len(by_value)))
        if sorted(by_value) != expected:
            raise DinomixInputError(source, f"label values {sorted(by_value)} are not consecutive from 0 (background).",
                                    f"Renumber the classes 0..{len(by_value) - 1}, as nnU-Net requires.")
        if len(by_value) < 2:
            raise DinomixInputError(source, "lists no class besides the background.", "Add the organ classes to \"labels\".")
        names = [by_value[v] for v in expected]
        return cls(names, title=title)

    @classmethod
    def from_dataset_json(cls, path_or_dict: str | os.PathLike | dict) -> "LabelMap":
        """Read the classes from an nnU-Net dataset.json (file, data set folder or dict).

        Colours come from ``"label_colors"`` when present, else from the organ presets by
        name, else a stable distinct hue.
        """
        if isinstance(path_or_dict, dict):
            data, source = path_or_dict, None
            if not isinstance(data.get("labels"), dict):
                raise DinomixInputError(None, 'dataset.json dict has no "labels" mapping.', 'Pass {"labels": {"background": 0, ...}}.')
        else:
            data, source = load_dataset_json(path_or_dict), path_or_dict
        base = cls.from_labels_dict(data["labels"], source=source, title=str(data.get("name", "")))
        given = data.get("label_colors")
        if not isinstance(given, dict):
            return base
        colors = []
        for value, name in enumerate(base.names):
            rgb = given.get(name, base.colors[value])
            if not (isinstance(rgb, (list, tuple)) and len(rgb) == 3
                    and all(isinstance(c, int) and 0 <= c <= 255 for c in rgb)):
                raise DinomixInputError(source, f'"label_colors" for {name!r} is {rgb!r}, not an RGB triple 0-255.',
                                        'Write it as [r, g, b] with integers 0-255, or drop "label_colors".')
            colors.append(tuple(rgb))
        return cls(base.names, colors, title=base.title)

    @classmethod
    def preset(cls, name: str) -> "LabelMap":
        """A shipped organ map: ``"btcv13"`` or ``"amos15"`` (fixed colours)."""
        key = name.lower().replace("-", "").replace("_", "")
        if key not in PRESETS:
            raise DinomixInputError(None, f"unknown label map preset {name!r}.", f"Use one of {', '.join(PRESETS)}.")
        doc = _preset_doc(key)
        rows = sorted(doc["labels"], key=lambda r: r["value"])
        return cls([r["name"] for r in rows], [tuple(r["color"]) for r in rows], title=doc["name"])


def preset_path(name: str) -> Path:
    """Path of a preset's JSON inside the installed package (``dinomix_core/resources``)."""
    return Path(str(resources.files("dinomix_core").joinpath("resources", f"{name}.json")))


@lru_cache(maxsize=None)
def _preset_doc(name: str) -> dict:
    return json.loads(preset_path(name).read_text(encoding="utf-8"))


def _norm(name: str) -> str:
    name = name.lower().replace("&", " and ")
    return re.sub(r"[^a-z0-9]+", "_", name).strip("_")


@lru_cache(maxsize=None)
def _known_colors() -> dict[str, tuple[int, int, int]]:
    known: dict[str, tuple[int, int, int]] = {}
    for preset in PRESETS:
        for row in _preset_doc(preset)["labels"]:
            for alias in (row["name"], row.get("display_name", ""), *row.get("aliases", ())):
                if alias:
                    known.setdefault(_norm(alias), tuple(row["color"]))
    return known


def default_color(name: str, value: int) -> tuple[int, int, int]:
    """The preset colour for a known organ name (or alias), else a stable distinct hue."""
    if value == 0:
        return (0, 0, 0)
    known = _known_colors().get(_norm(name))
    if known:
        return known
    hue = (value * 0.61803398875) % 1.0  # golden-ratio steps keep neighbouring values apart
    r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.95)
    return (round(r * 255), round(g * 255), round(b * 255))
