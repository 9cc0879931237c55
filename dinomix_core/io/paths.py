"""Refuse a write that would land on one of the command's own inputs.

Why: `dinomix predict --input a.nii.gz --output a.nii.gz` once replaced a CT with its label
map. Every command that reads and writes files lists both and calls
:func:`refuse_overwriting_inputs` before any slow work. Two paths are the same file when
they resolve to the same place (symlinks followed) or are one inode (``st_dev``/``st_ino``:
hard links, bind mounts, case-insensitive file systems).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .errors import DinomixInputError

PathLike = str | os.PathLike


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file or folder (either may not exist yet)."""
    a, b = Path(a).expanduser(), Path(b).expanduser()
    if a.resolve() == b.resolve():
        return True
    ida = _identity(a)
    return ida is not None and ida == _identity(b)


def refuse_overwriting_inputs(outputs: Iterable[PathLike], inputs: Iterable[PathLike], *,
                              fix: str = "Choose an output path that is not one of the inputs.") -> None:
    """Raise :class:`DinomixInputError` naming the first output that is also an input.

    ``outputs`` are the files (or folders) the command will write; ``inputs`` every file or
    folder it reads. Also refuses two outputs that are the same file (the second write would
    replace the first).
    """
    ins = [Path(p).expanduser() for p in inputs if p is not None]
    by_resolved = {p.resolve(): p for p in ins}
    by_id = {i: p for p in ins if (i := _identity(p)) is not None}
    seen: dict[Path, Path] = {}
    for out in (Path(p).expanduser() for p in outputs):
        resolved = out.resolve()
        hit = by_resolved.get(resolved) or by_id.get(_identity(out) or (-1, -1))
        if hit is not None:
            same = "" if hit == out else f" (the same file as input {hit})"
            raise DinomixInputError(out, f"is also an input of this command{same}; writing it would destroy that input.",
                                    fix)
        if resolved in seen:
            raise DinomixInputError(out, f"would be written twice in one run (also for {seen[resolved]}), and the "
                                    "second write would replace the first.", fix)
        seen[resolved] = out


def refuse_output_folder_of_inputs(out_dir: PathLike, in_dir: PathLike, *,
                                   fix: str = "Write the outputs to a separate folder.") -> None:
    """Refuse writing outputs into the very folder the inputs are read from (mixing them up)."""
    if same_file(out_dir, in_dir):
        raise DinomixInputError(out_dir, f"is the input folder {in_dir}; outputs written there would mix with "
                                "(or replace) the inputs.", fix)


def files_in(folder: PathLike | None) -> list[Path]:
    """The regular files directly inside ``folder`` (none when it is missing or not a folder)."""
    if folder is None:
        return []
    folder = Path(folder).expanduser()
    try:
        return [p for p in folder.iterdir() if p.is_file()]
    except OSError:
        return []
