"""Errors about teacher weight files: each names the file (or the places searched) and the fix."""

from __future__ import annotations

from dinomix_core.io.errors import DinomixInputError


class MissingWeightsError(DinomixInputError):
    """No weight file for the requested teacher where we looked, or an explicit path is absent."""


class WeightsFileError(DinomixInputError):
    """A weight file exists but cannot be used: unreadable, unsafe, or for another model."""


class ChecksumMismatchError(WeightsFileError):
    """The file's sha256 does not start with the hash its (Meta) file name carries."""
