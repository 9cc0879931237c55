"""Connected-component clean-up of predicted organ masks, decided per class on validation data.

A sliding-window student leaves stray islands of an organ far from the organ itself (a
"stomach" blob in the bowel, a "pancreas" speck near the spleen). Organs that are single
objects lose nothing when only their largest connected component is kept, and their HD95
stops being set by an island 10 cm away. Whether that holds for a class is not assumed: it is
decided on validation predictions, as nnU-Net does, and recorded in ``model.pt``.

Arrays are label maps indexed (z, y, x); components use full 26-connectivity (voxels that
touch at a corner belong together), so a thin oblique vessel is not split. Removed voxels
become background (0). Labelling runs inside each class's bounding box
(``scipy.ndimage.find_objects`` gives every box in one pass), so cleaning a 300x512x512
prediction costs about the bounding boxes' volume, not classes x volume.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from dinomix_core.engine.metrics import binary_scores

MODES = ("auto", "largest", "off")
"""``auto``: the classes the checkpoint records; ``largest``: every organ; ``off``: raw argmax."""

_STRUCTURE = np.ones((3, 3, 3), dtype=bool)


@dataclass
class PostProcessing:
    """Which classes keep only their largest component, and the evidence for the choice.

    ``keep_largest``: class values. ``decided_on``: what the choice was measured on
    ("held-out validation cases", "labeled training cases") or None when nothing was
    measured (clean-up then stays off under ``auto``). ``evidence``: class name ->
    {"dice_raw", "dice_largest", "hd95_raw_mm", "hd95_largest_mm", "cases"} (Dice in percent).
    """

    keep_largest: tuple[int, ...] = ()
    decided_on: str | None = None
    cases: int = 0
    evidence: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"keep_largest": [int(v) for v in self.keep_largest], "decided_on": self.decided_on,
                "cases": int(self.cases), "evidence": self.evidence}

    @classmethod
    def from_dict(cls, doc: dict | None) -> "PostProcessing":
        """From ``model.pt`` meta; a checkpoint from before clean-up existed gives "none decided"."""
        if not doc:
            return cls()
        return cls(tuple(int(v) for v in doc.get("keep_largest") or ()), doc.get("decided_on"),
                   int(doc.get("cases") or 0), dict(doc.get("evidence") or {}))

    def summary(self, names: dict[int, str] | None = None) -> str:
        """One line for the CLI and the GUI."""
        if self.decided_on is None:
            return "mask clean-up: not decided (no validation cases); predictions are the raw argmax"
        if not self.keep_largest:
            return f"mask clean-up: off for every organ (it did not help on {self.cases} {self.decided_on})"
        named = ", ".join((names or {}).get(v, str(v)) for v in self.keep_largest)
        return f"mask clean-up: largest component kept for {named} (decided on {self.cases} {self.decided_on})"


def classes_for(mode: str, recorded: PostProcessing, num_classes: int) -> tuple[int, ...]:
    """The class values to clean for a ``--postprocess`` mode (see :data:`MODES`)."""
    if mode not in MODES:
        raise ValueError(f"postprocess must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off":
        return ()
    if mode == "largest":
        return tuple(range(1, int(num_classes)))
    return tuple(recorded.keep_largest)


def keep_largest_component(labels: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """Labels (z, y, x) with only the largest 26-connected component of each of ``classes``.

    Works in place on ``labels`` and returns it. Other classes and background are untouched;
    voxels of dropped components become 0.
    """
    wanted = sorted({int(c) for c in classes if int(c) > 0})
    if not wanted or labels.size == 0:
        return labels
    boxes = ndimage.find_objects(labels, max_label=max(wanted))
    for value in wanted:
        box = boxes[value - 1] if value - 1 < len(boxes) else None
        if box is None:
            continue  # class not predicted
        region = labels[box]
        mask = region == value
        components, count = ndimage.label(mask, structure=_STRUCTURE)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        region[mask & (components != int(np.argmax(sizes)))] = 0
    return labels


def decide(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], spacings: Sequence[Sequence[float]],
           num_classes: int, *, decided_on: str, names: dict[int, str] | None = None) -> PostProcessing:
    """Per class: keep only the largest component when that does not lower the mean Dice.

    ``preds``/``gts``: (z, y, x) label maps of the same cases, ``spacings`` in mm (z, y, x).
    A class counts in a case when either map has it. Ties keep the clean-up: an organ that is
    one object in every validation prediction is one object in the anatomy too, and islands
    on new scans are then removed. A class never present in validation stays off.
    """
    names = names or {}
    raw: dict[int, list] = {c: [] for c in range(1, num_classes)}
    cleaned: dict[int, list] = {c: [] for c in range(1, num_classes)}
    for pred, gt, spacing in zip(preds, gts, spacings):
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        clean = keep_largest_component(pred.copy(), range(1, num_classes))
        for c in range(1, num_classes):
            p, g, q = pred == c, gt == c, clean == c
            if not (p.any() or g.any()):
                continue
            raw[c].append(binary_scores(p, g, spacing))
            cleaned[c].append(raw[c][-1] if np.array_equal(p, q) else binary_scores(q, g, spacing))
    keep, evidence = [], {}
    for c in range(1, num_classes):
        if not raw[c]:
            continue
        dice_raw = 100.0 * float(np.mean([s.dice for s in raw[c] if s.dice is not None]))
        dice_clean = 100.0 * float(np.mean([s.dice for s in cleaned[c] if s.dice is not None]))
        evidence[names.get(c, str(c))] = {
            "dice_raw": round(dice_raw, 3), "dice_largest": round(dice_clean, 3),
            "hd95_raw_mm": _mean_hd95(raw[c]), "hd95_largest_mm": _mean_hd95(cleaned[c]), "cases": len(raw[c]),
        }
        if dice_clean >= dice_raw - 1e-9:
            keep.append(c)
    return PostProcessing(tuple(keep), decided_on, len(preds), evidence)


def _mean_hd95(scores) -> float | None:
    values = [s.hd95_mm for s in scores if s.hd95_mm is not None]
    return None if not values else round(float(np.mean(values)), 3)
