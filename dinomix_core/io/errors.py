"""Errors raised for bad user input: each names the file, what is wrong and how to fix it."""

from __future__ import annotations

import os


class DinomixInputError(ValueError):
    """Bad input from the user (file, folder, option). The message is shown as is."""

    def __init__(self, path: str | os.PathLike | None, problem: str, fix: str | None = None):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path else ""
        message = f"{where}{problem}"
        if fix:
            message += f" Fix: {fix}"
        super().__init__(message)


class VolumeReadError(DinomixInputError):
    """An image or label file cannot be read as a 3D volume."""


class GeometryMismatchError(DinomixInputError):
    """A label map does not share its image's voxel grid (size, spacing, origin, direction)."""


class LabelValueError(DinomixInputError):
    """A label map holds values that are not integers or not in the class map."""


class VolumeWriteError(DinomixInputError):
    """An image or label file cannot be written (disk full, no permission, unsupported format)."""
