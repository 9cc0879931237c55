"""Checkpoints: atomic, ``weights_only``-loadable, self-describing.

Two kinds, one format (a ``torch.save`` dict of tensors plus a JSON string of metadata, so
``torch.load(weights_only=True)`` never unpickles an arbitrary object):

* the *model* file (``model.pt``): the student's weights, its config, the class map and the
  preprocessing: all that ``dinomix predict`` needs. The FKD projection head is a training
  device and is not in it.
* the *training state* (``last.pt``): model plus EMA teacher, projection head, optimiser,
  curriculum state and loss history, so ``--resume`` continues the same run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from dinomix_core.io.atomic import atomic_path
from dinomix_core.io.errors import DinomixInputError

FORMAT_VERSION = 1
MODEL_KIND = "dinomix-model"
STATE_KIND = "dinomix-training-state"


def save_checkpoint(path: str | Path, *, kind: str, meta: dict, tensors: dict[str, Any]) -> Path:
    """Write ``tensors`` (nested dicts of tensors / numbers) and JSON ``meta`` atomically."""
    payload = {
        "format": FORMAT_VERSION,
        "kind": kind,
        "meta_json": json.dumps(meta, sort_keys=True, default=_json_default),
        **tensors,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, *, kind: str | None = None, map_location="cpu") -> tuple[dict, dict]:
    """Return ``(meta, payload)``; clear errors for missing, corrupt or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise DinomixInputError(path, "checkpoint not found.", "pass the model.pt written by `dinomix train` (in its --out folder).")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle of arbitrary objects, not a torch file
        raise DinomixInputError(
            path,
            f"cannot be read as a DINO-Mix checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}).",
            "the file is corrupt or not a DINO-Mix checkpoint; use model.pt or last.pt from a `dinomix train` run.",
        ) from None
    if not isinstance(payload, dict) or "meta_json" not in payload:
        raise DinomixInputError(path, "is a torch file but not a DINO-Mix checkpoint.", "use model.pt or last.pt from a `dinomix train` run.")
    if payload.get("format", 0) > FORMAT_VERSION:
        raise DinomixInputError(path, f"was written by a newer DINO-Mix (format {payload['format']}).", "upgrade dinomix-studio.")
    if kind is not None and payload.get("kind") != kind:
        raise DinomixInputError(path, f"is a {payload.get('kind')} file, not a {kind}.", "for prediction pass model.pt; for --resume pass the run folder.")
    meta = json.loads(payload.pop("meta_json"))
    return meta, payload


def _json_default(obj):
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
