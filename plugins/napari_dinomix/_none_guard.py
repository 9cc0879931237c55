"""Keep ``None`` alive for the whole GUI process on Python 3.11.

Why: a C extension of the Qt stack (PySide6 6.12 / napari 0.9.2 here) releases one
reference to ``None`` more than it takes on some GUI paths. Measured 2026-12-05 on
tests/plugins/test_plugin_widget.py run in one process: ``sys.getrefcount(None)`` fell by
10,000 to 25,000 per GUI test, from 177,107 to 3,271 over 11 tests, and the 12th test's
process aborted ("none_dealloc: deallocating None", exit 134). A clinician's session does
the same GUI work over hours, and that abort would close the app mid-annotation. Python 3.12
made ``None`` immortal; on 3.11 the same is done here by adding 2**40 to its reference count
(at 25,000 a GUI action, a billion years of clicking).
"""

from __future__ import annotations

import ctypes
import sys

_PINNED = False
PIN = 1 << 40


def pin_none() -> bool:
    """Make ``None``'s reference count unreachable for a leak; True when it was done now."""
    global _PINNED
    if _PINNED or sys.version_info >= (3, 12):
        return False
    # ob_refcnt is the first field of every PyObject, at the object's address (CPython).
    ctypes.c_ssize_t.from_address(id(None)).value += PIN
    _PINNED = True
    return True


pin_none()
