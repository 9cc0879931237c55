"""Suite-wide settings: offline hub, small thread count, paths to the shared real CT."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
REAL_CT_DIR = SHARED_DATA / "real-ct" / "totalseg_example_3mm"


@pytest.fixture(scope="session")
def real_ct_dir() -> Path:
    """The real abdominal CT shipped beside the repo (absent on a user's machine)."""
    if not (REAL_CT_DIR / "ct.nii.gz").exists():
        pytest.skip(f"shared real CT not present at {REAL_CT_DIR}")
    return REAL_CT_DIR
