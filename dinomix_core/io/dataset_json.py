"""nnU-Net ``dataset.json``: the file users already keep next to imagesTr/labelsTr.

Only the keys this app relies on are checked (``labels``); everything else is kept as is so
a read-modify-write never drops a field nnU-Net or another tool put there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .atomic import atomic_write_text
from .errors import DinomixInputError

_EXAMPLE = '{"labels": {"background": 0, "spleen": 1}}'


def load_dataset_json(path: str | os.PathLike) -> dict:
    """Read a dataset.json (a file, or a data set folder holding one) and check ``labels``."""
    path = Path(path)
    if path.is_dir():
        path = path / "dataset.json"
    if not path.is_file():
        raise DinomixInputError(
            path, "dataset.json not found.",
            "Point to the nnU-Net data set folder (with imagesTr/, labelsTr/) or its dataset.json.",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DinomixInputError(path, f"is not valid JSON ({exc}).", "Fix the JSON syntax or regenerate the file.") from exc
    if not isinstance(data, dict) or not isinstance(data.get("labels"), dict) or not data["labels"]:
        raise DinomixInputError(
            path, 'has no "labels" mapping of class name to value.', f"Add one, for example {_EXAMPLE}."
        )
    return data


def write_dataset_json(path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` atomically as pretty JSON; ``path`` may be the data set folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "dataset.json"
    if not isinstance(data.get("labels"), dict) or not data["labels"]:
        raise DinomixInputError(path, 'refusing to write a dataset.json without "labels".', f"Pass a dict like {_EXAMPLE}.")
    atomic_write_text(path, json.dumps(data, indent=4) + "\n")
    return path
