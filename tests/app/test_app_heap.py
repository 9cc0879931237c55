"""The start-up heap is frozen out of later collections; garbage made afterwards still goes."""

from __future__ import annotations

import gc
import weakref

from dinomix_app.heap import freeze_startup_heap


class _Node:
    pass


def test_freezing_keeps_later_garbage_collectable():
    try:
        before = _Node()
        before.self = before  # a cycle alive at freeze time: exempt from now on
        frozen = freeze_startup_heap()
        assert frozen >= 1 and gc.get_freeze_count() == frozen
        after = _Node()
        after.self = after  # a cycle made later
        gone = weakref.ref(after)
        del after
        gc.collect()
        assert gone() is None
        # what was alive is out of the collector's generations (so a full collection skips it)
        assert not any(o is before for o in gc.get_objects())
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0 and any(o is before for o in gc.get_objects())
