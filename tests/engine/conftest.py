"""A tiny phantom data set shared by the engine tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from dinomix_core.data.phantom import write_phantom_dataset



@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """4 small phantom cases: 2 labeled, 1 unlabeled, 1 held out (phantom_003)."""
    out = tmp_path_factory.mktemp("phantom") / "data"
    write_phantom_dataset(out, 4, 11, "small")
    return out
