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


_USE = {
    MODEL_KIND: "pass the model.pt of a finished `dinomix train` run (in its --out folder)",
    STATE_KIND: "resume from a run folder whose last.pt is intact, or start a new run",
    None: "use the model.pt or last.pt written by `dinomix train`",
}


def _why_unreadable(exc: Exception) -> str:
    """A short, whole sentence for a file torch.load refused (never cut mid-sentence)."""
    text = str(exc)
    if "central directory" in text or "zip archive" in text or "EOF" in text or isinstance(exc, EOFError):
        return "the file is incomplete (cut short while copying or saving) or damaged"
    if "Weights only load failed" in text or "weights_only" in text:
        return "it holds pickled Python objects, which are never loaded (they could run code)"
    return f"it is not a torch checkpoint ({type(exc).__name__})"


def load_checkpoint(path: str | Path, *, kind: str | None = None, map_location="cpu", mmap: bool = False) -> tuple[dict, dict]:
    """Return ``(meta, payload)``; clear errors for missing, corrupt or foreign files.

    ``mmap=True`` maps the tensors instead of reading them (enough to look at ``meta``).
    """
    path = Path(path)
    use = _USE.get(kind, _USE[None])
    if not path.is_file():
        what = "training state (last.pt)" if kind == STATE_KIND else "checkpoint"
        problem = "is a folder, not a checkpoint file." if path.is_dir() else f"{what} not found."
        raise DinomixInputError(path, problem, use + ".")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # truncated zip, pickle of arbitrary objects, not a torch file
        raise DinomixInputError(path, f"cannot be read as a DINO-Mix checkpoint: {_why_unreadable(exc)}.",
                                use + ".") from None
    if not isinstance(payload, dict) or "meta_json" not in payload:
        raise DinomixInputError(path, "is a torch file but not a DINO-Mix checkpoint.", use + ".")
    if payload.get("format", 0) > FORMAT_VERSION:
        raise DinomixInputError(path, f"was written by a newer DINO-Mix (format {payload['format']}).", "upgrade dinomix-studio.")
    if kind is not None and payload.get("kind") != kind:
        raise DinomixInputError(path, f"is a {payload.get('kind')} file, not a {kind}.", use + ".")
    meta = json.loads(payload.pop("meta_json"))
    return meta, payload


# Settings a saved training state cannot continue with under other values.
RESUME_FIXED = ("method", "seed", "steps", "student", "student_width", "student_depth", "patch_size")


def check_resumable(run_dir: str | Path, config, *, names: dict | None = None) -> dict:
    """Before any slow work: ``run_dir`` holds a readable ``last.pt`` that ``config`` can continue.

    Returns the state's metadata. Raises :class:`DinomixInputError` for a missing folder or
    last.pt and for settings in :data:`RESUME_FIXED` that differ from the saved ones (a
    budget-fixed step count is the saved run's own and is not compared).
    """
    from dinomix_core.engine.config import TrainConfig

    run_dir = Path(run_dir)
    state = run_dir / "last.pt"
    fresh = "drop --resume to start a new run there, or pass the --out folder of the run to continue"
    if not run_dir.is_dir():
        raise DinomixInputError(run_dir, "no such run folder, so there is nothing to resume.", fresh + ".")
    if not state.is_file():
        raise DinomixInputError(run_dir, "holds no last.pt (the training state that --resume continues from).",
                                fresh + ".")
    meta, _ = load_checkpoint(state, kind=STATE_KIND, mmap=True)
    saved = TrainConfig.from_dict(meta.get("config", {}))
    fixed = [f for f in RESUME_FIXED if not (f == "steps" and meta.get("budget_fixed")
                                             and saved.time_budget_s == config.time_budget_s)]
    changed = [f"{(names or {}).get(f, f)} {_plain(getattr(saved, f))} -> {_plain(getattr(config, f))}"
               for f in fixed if _plain(getattr(saved, f)) != _plain(getattr(config, f))]
    if changed:
        raise DinomixInputError(state, f"this run was saved with other settings ({'; '.join(changed)}), so it "
                                "cannot be resumed with these.", "resume with the run's own settings, or start a "
                                "new run in another --out folder.")
    return meta


def _plain(value):
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else value


def _json_default(obj):
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
