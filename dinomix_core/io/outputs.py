"""Check where a command will write before it does any slow work.

Why: a read-only folder, a file standing where a folder belongs, or a folder where a file
belongs used to surface as a PermissionError / FileExistsError traceback at the very end of
a command (after minutes of training or prediction). Every command that writes calls
:func:`check_output_file` or :func:`check_output_dir` on each of its outputs first; each
raises one :class:`~dinomix_core.io.errors.DinomixInputError` naming the path that is wrong.

Nothing is created here: a missing folder is fine when the nearest existing folder above it
is writable (the command creates it later).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DinomixInputError

PathLike = str | os.PathLike


def _spelled(option: str | None) -> str:
    return f"{option} " if option else ""


def _for(option: str | None) -> str:
    return f" for {option}" if option else ""


def _unwritable_reason(folder: Path) -> str | None:
    """Why the current user cannot create files in ``folder`` (None: it can)."""
    try:
        flags = os.statvfs(folder).f_flag
    except OSError:
        flags = 0
    if flags & getattr(os, "ST_RDONLY", 1):
        return "it is on a read-only file system"
    effective = os.access in os.supports_effective_ids
    if not os.access(folder, os.W_OK | os.X_OK, effective_ids=effective):
        return "you have no permission to write in it"
    return None


def _check_existing_folder(folder: Path, target: Path, option: str | None) -> None:
    reason = _unwritable_reason(folder)
    if reason is None:
        return
    named = "" if folder == target else f" (needed to write {target})"
    raise DinomixInputError(folder, f"cannot be written: {reason}{named}.",
                            f"choose a path{_for(option)} in a folder you can write to (on a writable disk), or change "
                            "the folder's permissions.")


def _check_ancestors(target: Path, option: str | None) -> None:
    """The nearest existing folder above ``target`` must be a folder and writable."""
    above = target.parent
    while not os.path.lexists(above) and above != above.parent:
        above = above.parent
    if os.path.lexists(above) and not above.is_dir():
        raise DinomixInputError(above, f"is a file, but {target} needs it to be a folder.",
                                f"choose another path{_for(option)}, or move that file away.")
    _check_existing_folder(above, target, option)


def check_output_file(path: PathLike, *, option: str | None = None) -> Path:
    """Refuse ``path`` as a file to write: a folder there, a file above it, or no write permission.

    ``option`` is the command-line option that named it (said in the fix). Returns the path.
    """
    target = Path(path).expanduser()
    if target.is_dir():
        raise DinomixInputError(target, f"is a folder, but {_spelled(option)}names a file to write.",
                                f"name a file inside it{_for(option)} (e.g. {target / 'NAME'}), or another path.")
    _check_ancestors(target, option)
    return target


def check_output_dir(path: PathLike, *, option: str | None = None) -> Path:
    """Refuse ``path`` as a folder to write into: a file there or above it, or no write permission."""
    target = Path(path).expanduser()
    if os.path.lexists(target) and not target.is_dir():
        raise DinomixInputError(target, f"is a file, but {_spelled(option)}names a folder to write into.",
                                f"choose a folder path{_for(option)}, or move that file away.")
    if target.is_dir():
        _check_existing_folder(target, target, option)
    else:
        _check_ancestors(target, option)
    return target
