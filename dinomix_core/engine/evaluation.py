"""Evaluate a folder of predicted label maps against a folder of ground truth.

Files are matched by case id: the file name without its image suffix (``.nii.gz``, ``.nrrd``,
...), so nnU-Net's ``labelsTr/<case>.nii.gz`` pairs with a prediction ``<case>.nii.gz``. The
ground-truth folder defines the evaluated set: a case without a prediction is an error, a
prediction without ground truth is reported and skipped. Every pair must share its voxel
grid (size, spacing, origin, direction) exactly; nothing is resampled behind the user's back.
Metrics and their definitions are in :mod:`dinomix_core.engine.metrics`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from dinomix_core.engine.metrics import ABSENT, ClassScore, aggregate, score_case
from dinomix_core.io import FILE_SUFFIXES, LabelMap, read_labels
from dinomix_core.io.errors import DinomixInputError, GeometryMismatchError


def find_cases(folder: str | os.PathLike, *, role: str) -> dict[str, Path]:
    """``{case_id: path}`` of the label files in ``folder`` (hidden files ignored)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DinomixInputError(folder, f"{role} folder does not exist or is not a folder.", "Check the path.")
    cases: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        suffix = next((s for s in FILE_SUFFIXES if path.name.lower().endswith(s)), None)
        if suffix is None:
            continue
        cid = path.name[: -len(suffix)]
        if cid in cases:
            raise DinomixInputError(
                folder, f"holds two {role} files for case {cid!r}: {cases[cid].name} and {path.name}.", "Keep one of them."
            )
        cases[cid] = path
    if not cases:
        raise DinomixInputError(
            folder, f"holds no {role} label files ({', '.join(FILE_SUFFIXES)}).", f"Point to the folder with the {role} files."
        )
    return cases


def resolve_labelmap(gt_dir: Path, labels: str | os.PathLike | LabelMap | None) -> LabelMap | None:
    """The class map: given, else dataset.json in ``gt_dir`` or its parent (nnU-Net layout)."""
    if isinstance(labels, LabelMap):
        return labels
    if labels is not None:
        return LabelMap.from_dataset_json(labels)
    for candidate in (gt_dir / "dataset.json", gt_dir.parent / "dataset.json"):
        if candidate.is_file():
            return LabelMap.from_dataset_json(candidate)
    return None


def evaluate_folders(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    labelmap: LabelMap | str | os.PathLike | None = None,
    tail_k: int = 3,
    *,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """Score every ground-truth case against its prediction; returns the report dict.

    ``labelmap`` is a :class:`LabelMap`, a dataset.json path, or None (then dataset.json
    next to or above ``gt_dir``; without one, classes are numbered ``class_<v>`` up to the
    largest value found). The result is :func:`metrics.aggregate`'s dict plus
    ``pred_dir``, ``gt_dir``, ``labels`` (class names) and ``unmatched_predictions``.
    ``progress(done, total, case_id)`` is called after each case.
    """
    gt_dir, pred_dir = Path(gt_dir).expanduser(), Path(pred_dir).expanduser()
    gt_cases = find_cases(gt_dir, role="ground-truth")
    pred_cases = find_cases(pred_dir, role="prediction")
    missing = [c for c in gt_cases if c not in pred_cases]
    if missing:
        hint = ""
        if any(f"{c}_0000" in pred_cases for c in missing):
            hint = " Predictions must be named <case>.nii.gz, without the image's _0000 channel suffix."
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DinomixInputError(
            pred_dir, f"has no prediction for {len(missing)} ground-truth case(s) in {gt_dir}: {shown}.",
            "Predict those cases, or evaluate against a ground-truth folder holding only the predicted cases." + hint,
        )
    lm = resolve_labelmap(gt_dir, labelmap)
    scored = {}
    num_classes = lm.num_classes if lm is not None else 0
    total = len(gt_cases)
    for done, (cid, gt_path) in enumerate(gt_cases.items(), start=1):
        gt = read_labels(gt_path, labelmap=lm)
        pred = read_labels(pred_cases[cid], labelmap=lm)
        _check_grid(pred, gt, pred_cases[cid], gt_path)
        if lm is None:  # no class map anywhere: number classes by the values seen
            num_classes = max(num_classes, int(gt.array.max()) + 1, int(pred.array.max()) + 1, 2)
        # Score now and keep only the scores, so memory holds one case at a time.
        scored[cid] = score_case(pred.array, gt.array, gt.spacing_zyx, max(num_classes, 2))
        if progress is not None:
            progress(done, total, cid)
    if lm is None:
        names = ["background"] + [f"class_{v}" for v in range(1, num_classes)]
        # Cases scored before a larger value appeared lack the higher classes: those are absent there.
        scored = {cid: _pad(scores, num_classes) for cid, scores in scored.items()}
    else:
        names = list(lm.names)
    report = aggregate(scored, names, tail_k)
    report["pred_dir"] = str(pred_dir)
    report["gt_dir"] = str(gt_dir)
    report["labels"] = names
    report["unmatched_predictions"] = sorted(c for c in pred_cases if c not in gt_cases)
    return report


def _pad(scores: dict, num_classes: int) -> dict:
    return {v: scores.get(v, ClassScore(ABSENT, None, None, None, 0, 0)) for v in range(1, num_classes)}


def _check_grid(pred, gt, pred_path: Path, gt_path: Path) -> None:
    diffs = []
    if pred.shape != gt.shape:
        diffs.append(f"size (z, y, x) {pred.shape} vs {gt.shape}")
    else:
        if not _close(pred.spacing_zyx, gt.spacing_zyx):
            diffs.append(f"spacing (z, y, x) {_fmt(pred.spacing_zyx)} vs {_fmt(gt.spacing_zyx)} mm")
        if not _close(pred.origin_xyz, gt.origin_xyz):
            diffs.append(f"origin (x, y, z) {_fmt(pred.origin_xyz)} vs {_fmt(gt.origin_xyz)} mm")
        if not _close(pred.direction, gt.direction):
            diffs.append(f"direction {_fmt(pred.direction)} vs {_fmt(gt.direction)}")
    if diffs:
        raise GeometryMismatchError(
            pred_path, f"prediction does not lie on the grid of its ground truth {gt_path}: " + "; ".join(diffs) + ".",
            "Predict on the image that belongs to this ground truth, or resample the prediction onto it "
            "(dinomix_core.io.resample_like(pred, gt, is_label=True)).",
        )


def _close(a, b, atol: float = 1e-4) -> bool:
    return all(abs(float(x) - float(y)) <= atol for x, y in zip(a, b))


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"
