"""Suite-wide settings: offline hub, small thread count, paths to the shared real CT."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The GUI tests share this process with software OpenGL (Xvfb + Mesa llvmpipe): keep Triton's
# own LLVM out of it, as the GUI does (see napari_dinomix/_no_triton.py).
import napari_dinomix._no_triton  # noqa: E402,F401

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
REAL_CT_DIR = SHARED_DATA / "real-ct" / "totalseg_example_3mm"


@pytest.fixture(scope="session")
def real_ct_dir() -> Path:
    """The real abdominal CT shipped beside the repo (absent on a user's machine)."""
    if not (REAL_CT_DIR / "ct.nii.gz").exists():
        pytest.skip(f"shared real CT not present at {REAL_CT_DIR}")
    return REAL_CT_DIR


@pytest.fixture(autouse=True)
def float32_inference_on_every_cpu(monkeypatch):
    """``precision="auto"`` means float32 in every test, whatever the CPU.

    On CPUs with native bf16 (AVX512-BF16 / AMX) "auto" autocasts to bf16, which moves
    probabilities by ~2e-4 and flips near-ties: the exactness tests failed on such a CI
    machine (8 tests, 2026-12-02) while passing on AVX2. The bf16 path keeps its own tests,
    which ask for it explicitly or patch this probe back.
    """
    from dinomix_core.engine import _runtime

    monkeypatch.setattr(_runtime, "cpu_has_native_bf16", lambda: False)


# --- ending the test process ---------------------------------------------------------------
# After the whole GUI suite (hundreds of viewers, widgets and worker bridges in one process),
# CPython's final garbage collection aborted with "none_dealloc: deallocating None" (a
# reference-count bug in a C extension of the Qt stack; every test file alone exits cleanly,
# measured 2026-12-01 with PySide6 6.12 / napari 0.9.2). Every result is reported by then, so
# the process ends right after pytest's own clean-up, with pytest's exit status, skipping only
# that final collection (the same remedy pyqtgraph offers as pyqtgraph.exit()).
_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if not _EXIT_STATUS or os.environ.get("DINOMIX_TEST_NORMAL_EXIT"):
        return
    import logging
    import multiprocessing.util
    import sys

    # Not atexit._run_exitfuncs(): after the full suite (796 tests, 2026-12-01) the Qt stack's
    # own exit handler aborted the same way ("none_dealloc", exit 134 after every test had
    # passed). Only the handlers a test process needs run: worker processes are joined and
    # their temporary folders removed, and log files are flushed.
    try:
        multiprocessing.util._exit_function()
    except Exception:  # noqa: BLE001 - a failing clean-up must not turn a green run red
        pass
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS[-1])
