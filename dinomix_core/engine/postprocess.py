"""Connected-component clean-up of predicted organ masks, decided per class on validation data.

A sliding-window student leaves stray islands of an organ far from the organ itself (a
"stomach" blob in the bowel, a "pancreas" speck near the spleen). Organs that are single
objects lose nothing when only their largest connected component is kept, and their HD95
stops being set by an island 10 cm away. Where a prediction is legitimately in two large pieces
(a liver lobe cut off in a few slices), keeping the largest costs Dice; keeping every piece of
at least a tenth of the largest (``keep_large``) still drops the far specks. Which of the two,
or neither, suits a class is not assumed: it is decided on validation predictions, as nnU-Net
does, and recorded in ``model.pt``. On the phantom table's DINO-Mix runs the first rule
(largest or nothing) left the liver raw on every seed, and its islands kept the mean HD95 at
27.7 mm against 21.1 mm with the largest piece of every organ; with the large-pieces option
every run put the liver under it, and the decided clean-up scored 19.2 mm, the same as the
largest piece of every organ (3 seeds, benchmarks/README.md section 1).

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
"""``auto``: what the checkpoint records; ``largest``: every organ's largest piece; ``off``: raw argmax."""

PIECE_FRACTION = 0.1
"""Under ``keep_large`` a component stays when it holds at least this share of the class's largest."""

RULE = "largest, large pieces or off"
"""The decision rule of :func:`decide`; checkpoints from before ``keep_large`` existed record
"largest or off" (``PostProcessing.from_dict``)."""

_STRUCTURE = np.ones((3, 3, 3), dtype=bool)


@dataclass
class PostProcessing:
    """Which classes keep only their largest component or their large ones, and the evidence.

    ``keep_largest``: class values cleaned to their largest component. ``keep_large``: class
    values that keep every component of at least :data:`PIECE_FRACTION` of their largest.
    ``decided_on``: what the choice was measured on ("held-out validation cases", "labeled
    training cases") or None when nothing was measured (clean-up then stays off under
    ``auto``). ``evidence``: class name -> {"dice_raw", "dice_largest", "dice_large_pieces",
    "hd95_raw_mm", "hd95_largest_mm", "hd95_large_pieces_mm", "cases"} (Dice in percent).
    ``rule``: the decision rule that chose (:data:`RULE` for new decisions).
    """

    keep_largest: tuple[int, ...] = ()
    decided_on: str | None = None
    cases: int = 0
    evidence: dict = field(default_factory=dict)
    keep_large: tuple[int, ...] = ()
    rule: str = RULE

    def to_dict(self) -> dict:
        return {"keep_largest": [int(v) for v in self.keep_largest], "keep_large": [int(v) for v in self.keep_large],
                "piece_fraction": PIECE_FRACTION, "rule": self.rule, "decided_on": self.decided_on,
                "cases": int(self.cases), "evidence": self.evidence}

    @classmethod
    def from_dict(cls, doc: dict | None) -> "PostProcessing":
        """From ``model.pt`` meta; a checkpoint from before clean-up existed gives "none decided",
        one from before ``keep_large`` existed its "largest or off" decision, unchanged."""
        if not doc:
            return cls()
        return cls(tuple(int(v) for v in doc.get("keep_largest") or ()), doc.get("decided_on"),
                   int(doc.get("cases") or 0), dict(doc.get("evidence") or {}),
                   tuple(int(v) for v in doc.get("keep_large") or ()), str(doc.get("rule") or "largest or off"))

    def summary(self, names: dict[int, str] | None = None) -> str:
        """One line for the CLI and the GUI."""
        if self.decided_on is None:
            return "mask clean-up: not decided (no validation cases); predictions are the raw argmax"
        if not self.keep_largest and not self.keep_large:
            return f"mask clean-up: off for every organ (it did not help on {self.cases} {self.decided_on})"

        def named(values) -> str:
            return ", ".join((names or {}).get(v, str(v)) for v in values)

        parts = []
        if self.keep_largest:
            parts.append(f"largest component kept for {named(self.keep_largest)}")
        if self.keep_large:
            parts.append(f"pieces of {PIECE_FRACTION:.0%}+ of the largest kept for {named(self.keep_large)}")
        return f"mask clean-up: {'; '.join(parts)} (decided on {self.cases} {self.decided_on})"


@dataclass(frozen=True)
class CleanUpPlan:
    """The classes a prediction is cleaned for: largest piece only, or every large piece."""

    largest: tuple[int, ...] = ()
    large: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.largest or self.large)

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """``labels`` (z, y, x) cleaned in place and returned."""
        keep_largest_component(labels, self.largest)
        return keep_large_components(labels, self.large)


def plan_for(mode: str, recorded: PostProcessing, num_classes: int) -> CleanUpPlan:
    """What to clean for a ``--postprocess`` mode (see :data:`MODES`)."""
    if mode not in MODES:
        raise ValueError(f"postprocess must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off":
        return CleanUpPlan()
    if mode == "largest":
        return CleanUpPlan(largest=tuple(range(1, int(num_classes))))
    return CleanUpPlan(tuple(recorded.keep_largest), tuple(recorded.keep_large))


def keep_largest_component(labels: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """Labels (z, y, x) with only the largest 26-connected component of each of ``classes``.

    Works in place on ``labels`` and returns it. Other classes and background are untouched;
    voxels of dropped components become 0.
    """
    return _filter_components(labels, classes, lambda sizes: np.arange(sizes.size) == int(np.argmax(sizes)))


def keep_large_components(labels: np.ndarray, classes: Iterable[int], fraction: float = PIECE_FRACTION) -> np.ndarray:
    """Labels (z, y, x) keeping each of ``classes``' 26-connected components of at least
    ``fraction`` of that class's largest component (in voxels); in place, like
    :func:`keep_largest_component`."""
    return _filter_components(labels, classes, lambda sizes: sizes >= fraction * sizes.max())


def _filter_components(labels: np.ndarray, classes: Iterable[int], keep) -> np.ndarray:
    """Drop (to 0) the components of each class that ``keep(sizes)`` rejects; ``sizes[i]`` is
    component i's voxel count, ``sizes[0]`` (the outside) 0."""
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
        kept = np.asarray(keep(sizes), dtype=bool)
        kept[0] = False
        region[mask & ~kept[components]] = 0
    return labels


def decide(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], spacings: Sequence[Sequence[float]],
           num_classes: int, *, decided_on: str, names: dict[int, str] | None = None) -> PostProcessing:
    """Per class: the strongest clean-up that does not lower the mean Dice.

    ``preds``/``gts``: (z, y, x) label maps of the same cases, ``spacings`` in mm (z, y, x).
    A class counts in a case when either map has it. In order of preference: the largest
    component alone, then every component of at least :data:`PIECE_FRACTION` of the largest,
    then nothing. Ties keep the stronger clean-up: an organ that is one object in every
    validation prediction is one object in the anatomy too, and islands on new scans are then
    removed. A class never present in validation stays off.
    """
    names = names or {}
    variants = ("raw", "largest", "large_pieces")
    scores: dict[str, dict[int, list]] = {v: {c: [] for c in range(1, num_classes)} for v in variants}
    for pred, gt, spacing in zip(preds, gts, spacings):
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        cleaned = {"largest": keep_largest_component(pred.copy(), range(1, num_classes)),
                   "large_pieces": keep_large_components(pred.copy(), range(1, num_classes))}
        for c in range(1, num_classes):
            p, g = pred == c, gt == c
            if not (p.any() or g.any()):
                continue
            raw = binary_scores(p, g, spacing)
            scores["raw"][c].append(raw)
            for name, clean in cleaned.items():
                q = clean == c
                scores[name][c].append(raw if np.array_equal(p, q) else binary_scores(q, g, spacing))
    largest, large, evidence = [], [], {}
    for c in range(1, num_classes):
        if not scores["raw"][c]:
            continue
        dice = {v: 100.0 * float(np.mean([s.dice for s in scores[v][c] if s.dice is not None])) for v in variants}
        evidence[names.get(c, str(c))] = {
            **{f"dice_{v}": round(dice[v], 3) for v in variants},
            **{f"hd95_{v}_mm": _mean_hd95(scores[v][c]) for v in variants}, "cases": len(scores["raw"][c]),
        }
        if dice["largest"] >= max(dice["raw"], dice["large_pieces"]) - 1e-9:
            largest.append(c)
        elif dice["large_pieces"] >= dice["raw"] - 1e-9:
            large.append(c)
    return PostProcessing(tuple(largest), decided_on, len(preds), evidence, tuple(large), RULE)


def _mean_hd95(scores) -> float | None:
    values = [s.hd95_mm for s in scores if s.hd95_mm is not None]
    return None if not values else round(float(np.mean(values)), 3)
