"""Segmentation metrics: per-class Dice, HD95 and ASD (mm), aggregated the DHC way.

Arrays are label maps indexed (z, y, x); ``spacing_zyx`` is the voxel size in mm in that
order, so every distance is in mm even for anisotropic CT.

Definitions (fixed here so that tables from the trainer, the CLI and the benchmarks agree):

* **Dice** = 2|P∩G| / (|P| + |G|), reported in percent in every summary (as the papers'
  tables do); :class:`ClassScore` keeps the fraction.
* **Surface** of a mask: its voxels with at least one of their 6 *face* neighbours outside
  the mask (binary erosion with the 3D cross, ``generate_binary_structure(3, 1)``; outside
  the array counts as outside, so a mask touching the border has a surface there). This is
  MedPy's default (connectivity 1); ``connectivity=3`` (26-neighbourhood) is available.
* Directed surface distances P→G: for every surface voxel of P, the Euclidean distance in
  mm to the nearest surface voxel of G (``distance_transform_edt`` with
  ``sampling=spacing_zyx``); G→P likewise.
* **HD95** = max(95th percentile of P→G, 95th percentile of G→P), percentiles with linear
  interpolation. This is the MedPy ``hd95`` / MONAI (``directed=False``) definition used by
  the SSL papers we compare with; it is *not* the 95th percentile of the pooled distances
  (which down-weights the direction with fewer surface voxels).
* **ASD** (average symmetric surface distance) = mean of the pooled distances,
  (ΣP→G + ΣG→P) / (|∂P| + |∂G|), as in Heimann et al. 2009. Note that MedPy's ``asd``
  (used by DHC's tables) is the *directed* mean P→G, and MedPy's ``assd`` is the mean of the
  two directed means; the three agree when the surfaces have equal size.

Empty masks (the status of a class in a case):

* ``"present"``: both non-empty; Dice, HD95 and ASD are defined.
* ``"absent"``: both empty. The class is not in this case: Dice/HD95/ASD are ``None`` and
  the case is *excluded* from every mean (never scored as Dice 1, which inflated DHC's
  tables).
* ``"false_positive"``: ground truth empty, prediction not. Dice is 0 and counts in the
  class mean; HD95/ASD are ``None`` (undefined) and the case is counted in ``fp_cases``.
* ``"missed"``: prediction empty, ground truth not. Dice is 0 and counts in the class
  mean; HD95/ASD are ``None`` (no penalty value is invented) and the case is counted in
  ``missed_cases``.

Aggregation (DHC protocol): per class, the mean over the cases where the value is defined
(Dice: present, false-positive and missed cases; HD95/ASD: present cases only); then the
mean over the foreground classes that have a value (background is never scored). The
**tail** mean is the mean class Dice over the ``tail_k`` foreground classes with the fewest
ground-truth voxels summed over the evaluated cases (classes with no ground-truth voxel at
all are not candidates); ties go to the lower label value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

PRESENT, ABSENT, FALSE_POSITIVE, MISSED = "present", "absent", "false_positive", "missed"

DEFINITIONS = {
    "dice": "2|P∩G|/(|P|+|G|), percent; both empty = absent, excluded from means",
    "surface": "voxels with a face (6-) neighbour outside the mask",
    "hd95_mm": "max of the two directed 95th-percentile surface distances (MedPy hd95)",
    "asd_mm": "mean of the pooled symmetric surface distances (Heimann 2009)",
    "aggregation": "per class over cases where defined, then over foreground classes",
    "tail": "mean class Dice of the tail_k classes with the fewest ground-truth voxels",
}


@dataclass(frozen=True)
class ClassScore:
    """Scores of one class in one case. ``dice`` is a fraction in [0, 1]; distances in mm."""

    status: str
    dice: float | None
    hd95_mm: float | None
    asd_mm: float | None
    gt_voxels: int
    pred_voxels: int


def surface_mask(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Boolean (z, y, x) surface of ``mask``: voxels with a neighbour outside (see module doc)."""
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(3, connectivity)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(
    pred: np.ndarray, gt: np.ndarray, spacing_zyx: Sequence[float], connectivity: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: (pred→gt, gt→pred), one value per surface voxel.

    Both masks must be non-empty. Work is confined to their joint bounding box plus one
    voxel, which gives the same distances as the full volume (every surface voxel is inside).
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if not pred.any() or not gt.any():
        raise ValueError("surface distances need two non-empty masks")
    box = _joint_box(pred, gt)
    sp, sg = surface_mask(pred[box], connectivity), surface_mask(gt[box], connectivity)
    sampling = tuple(float(s) for s in spacing_zyx)
    to_gt = ndimage.distance_transform_edt(~sg, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~sp, sampling=sampling)
    return to_gt[sp], to_pred[sg]


def hd95_from_distances(pred_to_gt: np.ndarray, gt_to_pred: np.ndarray) -> float:
    """HD95 (mm): the larger of the two directed 95th percentiles."""
    return float(max(np.percentile(pred_to_gt, 95), np.percentile(gt_to_pred, 95)))


def asd_from_distances(pred_to_gt: np.ndarray, gt_to_pred: np.ndarray) -> float:
    """ASD (mm): the mean of all distances of both directions pooled together."""
    total = float(np.sum(pred_to_gt)) + float(np.sum(gt_to_pred))
    return total / (len(pred_to_gt) + len(gt_to_pred))


def binary_scores(pred: np.ndarray, gt: np.ndarray, spacing_zyx: Sequence[float], connectivity: int = 1) -> ClassScore:
    """Dice, HD95 and ASD of one binary (z, y, x) mask pair, with the empty-mask statuses."""
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    n_pred, n_gt = int(pred.sum()), int(gt.sum())
    if n_pred == 0 and n_gt == 0:
        return ClassScore(ABSENT, None, None, None, 0, 0)
    if n_gt == 0:
        return ClassScore(FALSE_POSITIVE, 0.0, None, None, 0, n_pred)
    if n_pred == 0:
        return ClassScore(MISSED, 0.0, None, None, n_gt, 0)
    box = _joint_box(pred, gt)
    overlap = int(np.count_nonzero(pred[box] & gt[box]))
    d_pg, d_gp = surface_distances(pred[box], gt[box], spacing_zyx, connectivity)
    return ClassScore(
        PRESENT,
        2.0 * overlap / (n_pred + n_gt),
        hd95_from_distances(d_pg, d_gp),
        asd_from_distances(d_pg, d_gp),
        n_gt,
        n_pred,
    )


def score_case(
    pred: np.ndarray, gt: np.ndarray, spacing_zyx: Sequence[float], num_classes: int, connectivity: int = 1
) -> dict[int, ClassScore]:
    """Scores of every foreground class (values 1..num_classes-1) in one case.

    ``pred`` and ``gt`` are integer (z, y, x) label maps on the same grid; values outside
    [0, num_classes) are refused.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape (z, y, x) {pred.shape} differs from ground truth shape {gt.shape}")
    for name, arr in (("prediction", pred), ("ground truth", gt)):
        if not np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.bool_):
            raise ValueError(f"{name} must be an integer label map, got dtype {arr.dtype}")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= num_classes):
            raise ValueError(
                f"{name} holds values in [{int(arr.min())}, {int(arr.max())}], outside the {num_classes} classes 0..{num_classes - 1}"
            )
    # One pass per map finds every class's bounding box, so each class only touches its box.
    pred_boxes = ndimage.find_objects(_as_int(pred), max_label=num_classes - 1)
    gt_boxes = ndimage.find_objects(_as_int(gt), max_label=num_classes - 1)
    scores: dict[int, ClassScore] = {}
    for value in range(1, num_classes):
        boxes = [b for b in (pred_boxes[value - 1], gt_boxes[value - 1]) if b is not None]
        if not boxes:
            scores[value] = ClassScore(ABSENT, None, None, None, 0, 0)
            continue
        box = tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))
        box = _grow(box, pred.shape)
        scores[value] = binary_scores(pred[box] == value, gt[box] == value, spacing_zyx, connectivity)
    return scores


def aggregate(
    per_case: Mapping[str, Mapping[int, ClassScore]], class_names: Sequence[str], tail_k: int = 3
) -> dict:
    """Summarise per-case scores into the report dict (Dice in %, distances in mm).

    ``class_names[v]`` names value ``v`` (index 0 is the background and is not scored).
    Returns ``{"per_class", "mean_dice", "mean_hd95_mm", "mean_asd_mm", "tail_dice",
    "tail_classes", "tail_k", "n_cases", "per_case", "definitions"}``; undefined values are
    ``None`` so the dict is valid JSON.
    """
    if tail_k < 0:
        raise ValueError(f"tail_k must be >= 0, got {tail_k}")
    per_class: dict[str, dict] = {}
    gt_totals: dict[int, int] = {}
    for value in range(1, len(class_names)):
        rows = [case[value] for case in per_case.values() if value in case]
        dice = [r.dice for r in rows if r.dice is not None]
        hd = [r.hd95_mm for r in rows if r.hd95_mm is not None]
        asd = [r.asd_mm for r in rows if r.asd_mm is not None]
        gt_totals[value] = sum(r.gt_voxels for r in rows)
        per_class[class_names[value]] = {
            "value": value,
            "dice": _mean_percent(dice),
            "hd95_mm": _mean(hd),
            "asd_mm": _mean(asd),
            "n_cases": len(dice),
            "n_surface_cases": len(hd),
            "fp_cases": sum(r.status == FALSE_POSITIVE for r in rows),
            "missed_cases": sum(r.status == MISSED for r in rows),
            "absent_cases": sum(r.status == ABSENT for r in rows),
            "gt_voxels": gt_totals[value],
        }
    candidates = sorted((v for v, n in gt_totals.items() if n > 0), key=lambda v: (gt_totals[v], v))
    tail_values = candidates[:tail_k]
    tail_names = [class_names[v] for v in tail_values]
    return {
        "per_class": per_class,
        "mean_dice": _mean([c["dice"] for c in per_class.values() if c["dice"] is not None]),
        "mean_hd95_mm": _mean([c["hd95_mm"] for c in per_class.values() if c["hd95_mm"] is not None]),
        "mean_asd_mm": _mean([c["asd_mm"] for c in per_class.values() if c["asd_mm"] is not None]),
        "tail_dice": _mean([per_class[n]["dice"] for n in tail_names if per_class[n]["dice"] is not None]),
        "tail_classes": tail_names,
        "tail_k": int(tail_k),
        "n_cases": len(per_case),
        "per_case": {
            case_id: {
                class_names[v]: {
                    "status": s.status,
                    "dice": None if s.dice is None else 100.0 * s.dice,
                    "hd95_mm": s.hd95_mm,
                    "asd_mm": s.asd_mm,
                    "gt_voxels": s.gt_voxels,
                    "pred_voxels": s.pred_voxels,
                }
                for v, s in sorted(scores.items())
            }
            for case_id, scores in per_case.items()
        },
        "definitions": dict(DEFINITIONS),
    }


def evaluate_arrays(
    pred: np.ndarray | Sequence[np.ndarray],
    gt: np.ndarray | Sequence[np.ndarray],
    spacing_zyx: Sequence[float] | Sequence[Sequence[float]],
    num_classes: int,
    *,
    class_names: Sequence[str] | None = None,
    tail_k: int = 3,
    case_ids: Sequence[str] | None = None,
    connectivity: int = 1,
) -> dict:
    """In-memory evaluation: one (z, y, x) label-map pair, or lists of them, to the report.

    ``spacing_zyx`` (mm) is one triple for all cases or one per case. The result has the same
    shape as :func:`aggregate` (and as ``dinomix evaluate``'s JSON).
    """
    preds = [pred] if isinstance(pred, np.ndarray) else list(pred)
    gts = [gt] if isinstance(gt, np.ndarray) else list(gt)
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} ground-truth maps")
    spacings = np.asarray(spacing_zyx, dtype=float)
    spacings = np.broadcast_to(spacings, (len(gts), 3)) if spacings.ndim == 1 else spacings
    if spacings.shape != (len(gts), 3):
        raise ValueError(f"spacing_zyx must be one (z, y, x) triple or one per case, got shape {spacings.shape}")
    names = list(class_names) if class_names is not None else ["background"] + [f"class_{v}" for v in range(1, num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    ids = list(case_ids) if case_ids is not None else [f"case_{i:03d}" for i in range(len(gts))]
    if len(ids) != len(gts) or len(set(ids)) != len(ids):
        raise ValueError("case_ids must be unique, one per case")
    per_case = {
        cid: score_case(p, g, tuple(s), num_classes, connectivity) for cid, p, g, s in zip(ids, preds, gts, spacings)
    }
    return aggregate(per_case, names, tail_k)


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _mean_percent(fractions: Sequence[float]) -> float | None:
    m = _mean(fractions)
    return None if m is None else 100.0 * m


def _joint_box(a: np.ndarray, b: np.ndarray) -> tuple[slice, slice, slice]:
    """Bounding box of a | b grown by one voxel (so erosion sees the true outside)."""
    idx = np.nonzero(a | b)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    return _grow(box, a.shape)


def _grow(box, shape) -> tuple[slice, slice, slice]:
    return tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, shape))



def _as_int(labels: np.ndarray) -> np.ndarray:
    return labels.view(np.uint8) if labels.dtype == np.bool_ else labels
