"""The annotation project: a folder with a transactional SQLite store of cases, label
revisions, training runs and predictions. Every front end (CLI, napari plugin, app) goes
through :class:`Project`; see store.py for the folder layout and the save protocol.
"""

from dinomix_core.project.cases import AddOutcome, AddReport, Case
from dinomix_core.project.errors import (CaseNotFoundError, ClassMapError, ImageChangedError, NotAProjectError,
                                         ProjectBusyError, ProjectError, ProjectVersionError, RevisionNotFoundError)
from dinomix_core.project.ranking import tail_class_weights, uncertainty_score, uncertainty_summary
from dinomix_core.project.revisions import Revision
from dinomix_core.project.runs import LabeledCase, Run, UnlabeledCase
from dinomix_core.project.schema import SCHEMA_VERSION
from dinomix_core.project.store import Project, is_project

__all__ = [
    "SCHEMA_VERSION",
    "AddOutcome",
    "AddReport",
    "Case",
    "CaseNotFoundError",
    "ClassMapError",
    "ImageChangedError",
    "LabeledCase",
    "NotAProjectError",
    "Project",
    "ProjectBusyError",
    "ProjectError",
    "ProjectVersionError",
    "Revision",
    "RevisionNotFoundError",
    "Run",
    "UnlabeledCase",
    "is_project",
    "tail_class_weights",
    "uncertainty_score",
    "uncertainty_summary",
]
