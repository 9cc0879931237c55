"""The start-up heap moved out of the garbage collector's way.

Why: napari runs a full ``gc.collect()`` whenever a layer is removed (to release the GPU
resources of its visual). With torch, napari and Qt loaded, a full collection walks about
650,000 long-lived objects: putting a model's first prediction on screen stalled the event
loop for 1.7 s, 0.73 s of it in that collection (sample project, 2-core build machine, Xvfb;
measured with cProfile around ``show_prediction``). Those objects (modules, classes,
functions made at import time) live as long as the process, so ``gc.freeze()`` moves them to
the permanent generation once the window is built: the same step then took 1.1 s. Objects
made later are collected as before. Since the GUI process stopped importing torch (see
tests/app/test_app_no_torch_in_gui.py) the start-up heap is about 320,000 objects, a full
collection of them 170 ms: still worth keeping out of the way.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect once, then exempt every object alive now from later collections; returns their count."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
