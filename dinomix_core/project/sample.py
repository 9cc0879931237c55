"""A ready-made sample project of phantom CTs, for trying the app without data of one's own.

Built once and then reused: a second call returns the existing project as it is, edits and
training runs included. The project is assembled in a hidden folder beside its final place
and renamed in only when complete, so an interrupted build never leaves a half project where
the app looks for one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

from dinomix_core.project.errors import ProjectError
from dinomix_core.project.store import Project, is_project

log = logging.getLogger(__name__)

SAMPLE_DIR_ENV = "DINOMIX_SAMPLE_DIR"
SAMPLE_AUTHOR = "sample"
_PARTIAL = ".partial-"
_STALE_PARTIAL_S = 3600.0  # a build folder this old belongs to no running build


def default_sample_root() -> Path:
    """``$DINOMIX_SAMPLE_DIR``, else ``<user data dir>/dinomix/sample-project``."""
    env = os.environ.get(SAMPLE_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("dinomix")) / "sample-project"


def create_sample_project(root: str | os.PathLike | None = None, *, cases: int = 4, labeled: int = 2,
                          seed: int = 0, size: str = "small") -> Path:
    """The sample project's folder, creating it on first use.

    ``cases`` phantom CTs (seed ``seed``, phantom ``size``) are copied into the project's
    ``images/``; the first ``labeled`` get their ground truth as final human revisions by
    author ``"sample"``, the rest are left for the model. An existing project at ``root`` is
    returned untouched, whatever was done to it since.
    """
    if cases < 1 or not 0 <= labeled <= cases:
        raise ValueError(f"need cases >= 1 and 0 <= labeled <= cases, got cases={cases}, labeled={labeled}")
    root = Path(root).expanduser() if root is not None else default_sample_root()
    root = root.resolve()
    if _usable(root):
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ProjectError(root, "exists and is not a DINO-Mix project, so the sample project cannot be made there.",
                           f"Delete or move it, or set ${SAMPLE_DIR_ENV} to another folder.")
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(root)
    staging = root.parent / f".{root.name}{_PARTIAL}{uuid.uuid4().hex[:8]}"
    try:
        built = _build(staging, cases=cases, labeled=labeled, seed=seed, size=size)
        try:
            if root.is_dir():
                root.rmdir()  # empty (checked above); renaming onto it is not portable
            os.replace(built, root)
        except OSError:
            if _usable(root):  # another process finished its build first: use that one
                log.info("%s: sample project made by another process meanwhile", root)
                return root
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("%s: sample project created (%d cases, %d labeled)", root, cases, labeled)
    return root


def _build(staging: Path, *, cases: int, labeled: int, seed: int, size: str) -> Path:
    """Make the complete project in ``staging/project``; phantom sources go to ``staging/src``."""
    from dinomix_core.data.phantom import case_id, generate_case, phantom_labelmap
    from dinomix_core.io import write_image

    folder, sources = staging / "project", staging / "src"
    project = Project.init(folder, label_map=phantom_labelmap())
    try:
        for index in range(cases):
            image, labels = generate_case(index, seed=seed, size=size)
            name = case_id(index)
            source = write_image(image, sources / f"{name}.nii.gz")
            outcome = project.add_image(source, copy=True, case_id=name)
            if index < labeled:
                project.save_labels(outcome.case_id, labels.array, author=SAMPLE_AUTHOR, final=True,
                                    note="phantom ground truth (sample project)")
    finally:
        project.close()
    return folder


def _usable(root: Path) -> bool:
    """True when ``root`` is a project that opens and has cases (however edited since)."""
    if not is_project(root):
        return False
    try:
        with Project.open(root, tidy=False) as project:
            return bool(project.cases()) and project.label_map is not None
    except ProjectError as exc:
        raise ProjectError(root, f"the sample project cannot be opened ({exc.problem})",
                           "Delete the folder; the sample project is rebuilt on next use.") from exc


def _remove_stale_builds(root: Path) -> None:
    """Delete build folders of interrupted runs (our own hidden ``.<name>.partial-*`` folders)."""
    now = time.time()
    for leftover in root.parent.glob(f".{root.name}{_PARTIAL}*"):
        with contextlib.suppress(OSError):
            if leftover.is_dir() and now - leftover.stat().st_mtime > _STALE_PARTIAL_S:
                shutil.rmtree(leftover)
