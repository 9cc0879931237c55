"""Tell a label map from a CT by its values, so a label file is not added as a scan.

Why: `dinomix project add` took a label map (values 0..13) as a CT; it then trained as an
"unlabeled scan" of flat intensities and got a model prediction of its own. A CT in
Hounsfield units spans air (about -1000 HU) to bone (+1000 HU and more); a label map holds a
few small non-negative whole numbers. Only the clear case is refused: whole numbers only,
all within 0..255, and at most ``MAX_LABEL_VALUES`` distinct ones.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import DinomixInputError
from .validation import integral_range, present_values
from .volume import Volume

# More values than TotalSegmentator's 117 classes + background; an 8-bit image uses most of its
# 256 levels.
MAX_LABEL_VALUES = 128


def label_like_values(array: np.ndarray) -> np.ndarray | None:
    """The distinct values when ``array`` (z, y, x) looks like a label map, else None."""
    integral, lo, hi = integral_range(array)
    if not integral or lo < 0 or hi > 255:
        return None
    values = present_values(array.astype(np.uint8, copy=False) if array.dtype != np.uint8 else array)
    return values if values.size <= MAX_LABEL_VALUES else None


def refuse_label_like(volume: Volume, path: str | os.PathLike) -> None:
    """Raise :class:`DinomixInputError` when ``volume`` read from ``path`` is clearly a label map."""
    values = label_like_values(np.asarray(volume.array))
    if values is None:
        return
    shown = ", ".join(str(int(v)) for v in values[:8]) + (", ..." if values.size > 8 else "")
    raise DinomixInputError(
        path,
        f"holds only {values.size} distinct whole number(s) ({shown}) and no value below 0, so it is a label map, "
        "not a CT (a CT in HU has air near -1000).",
        "import it as a case's label with `dinomix project label DIR CASE FILE`; if it really is a scan, convert "
        "it to Hounsfield units first.",
    )
