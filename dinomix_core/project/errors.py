"""Errors a project raises: each names the folder or case, what is wrong and how to fix it."""

from __future__ import annotations

from dinomix_core.io.errors import DinomixInputError


class ProjectError(DinomixInputError):
    """A project folder or an operation on it cannot go ahead."""


class NotAProjectError(ProjectError):
    """The folder holds no project database."""


class ProjectVersionError(ProjectError):
    """The project was written by a newer DINO-Mix Studio (schema version above ours)."""


class ProjectBusyError(ProjectError):
    """Another process held the project's write lock longer than the busy timeout."""


class CaseNotFoundError(ProjectError):
    """No case (or no active case) has that id."""


class RevisionNotFoundError(ProjectError):
    """No revision has that id for that case."""


class ImageChangedError(ProjectError):
    """A case's image is missing or its content hash no longer matches the one recorded."""


class ClassMapError(ProjectError):
    """A class map conflicts with the project's (different names for the same values)."""
