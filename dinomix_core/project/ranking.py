"""Which scan to annotate next: the one the latest model is least sure about.

The score is the entropy of the softmax, normalised to [0, 1] by log(C), averaged per
predicted organ and then across organs with tail-class weights. Averaging per class first
matters under class imbalance: a voxel-wise mean is dominated by the liver, so an uncertain
adrenal gland (a few hundred voxels) would never move the score. Background voxels are left
out: they are most of the volume and mostly certain, and would dilute every case equally.

Before any run has scored the unlabeled cases, the order is random but seeded (per project,
stored at init), so the suggestion is the same every time it is asked for.
"""

from __future__ import annotations

import random

import numpy as np

_SLAB = 8  # z slices per chunk: keeps temporaries small for full-size volumes


def _check_probs(probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.ndim != 4 or probs.shape[0] < 2:
        raise ValueError(f"probs must be (C, z, y, x) softmax probabilities with C >= 2, got shape {probs.shape}")
    if not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(f"probs must be floating point, got {probs.dtype}")
    return probs


def _class_weights(class_weights, num_classes: int) -> np.ndarray:
    if class_weights is None:
        return np.ones(num_classes)
    weights = np.asarray(class_weights, dtype=np.float64).reshape(-1)
    if weights.shape != (num_classes,):
        raise ValueError(f"class_weights needs one weight per class ({num_classes}), got {weights.shape[0]}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError(f"class_weights must be finite and >= 0, got {weights}")
    return weights


def class_entropy(probs: np.ndarray) -> tuple[dict[int, float], float]:
    """Per predicted foreground class: mean normalised entropy over its voxels; plus the
    whole-volume mean. ``probs``: (C, z, y, x) softmax, any float dtype.

    Returns ``({class value: mean entropy in [0, 1]}, volume mean entropy)``; classes the
    argmax never predicts are absent.
    """
    probs = _check_probs(probs)
    num_classes = probs.shape[0]
    sums = np.zeros(num_classes)
    counts = np.zeros(num_classes, dtype=np.int64)
    total = 0.0
    norm = np.log(num_classes)
    for z in range(0, probs.shape[1], _SLAB):
        p = probs[:, z : z + _SLAB].astype(np.float32, copy=False)
        entropy = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=0) / norm
        pred = p.argmax(axis=0).ravel()
        flat = entropy.ravel().astype(np.float64)
        sums += np.bincount(pred, weights=flat, minlength=num_classes)
        counts += np.bincount(pred, minlength=num_classes)
        total += float(flat.sum())
    per_class = {c: float(sums[c] / counts[c]) for c in range(1, num_classes) if counts[c] > 0}
    return per_class, total / max(int(counts.sum()), 1)


def uncertainty_summary(probs: np.ndarray, class_weights=None) -> tuple[float, dict[int, float]]:
    """``(case score, per-class mean entropy)`` from one softmax volume (C, z, y, x).

    Score = sum_c w_c * H_c / sum_c w_c over predicted foreground classes c, where H_c is the
    mean normalised entropy of the voxels predicted as c. With no predicted foreground the
    whole-volume mean entropy is returned (the model saw no organ: report how unsure it was).
    """
    per_class, volume_mean = class_entropy(probs)
    weights = _class_weights(class_weights, np.asarray(probs).shape[0])
    present = [c for c in per_class if weights[c] > 0]
    if not present:
        return float(volume_mean), per_class
    w = np.array([weights[c] for c in present])
    h = np.array([per_class[c] for c in present])
    return float((w * h).sum() / w.sum()), per_class


def uncertainty_score(probs: np.ndarray, class_weights=None) -> float:
    """Case uncertainty in [0, 1] from softmax probabilities (C, z, y, x); higher = less sure.

    ``class_weights`` (length C; background's is ignored) should favour tail classes, e.g.
    :func:`tail_class_weights` of the labeled voxel counts. None weighs classes equally.
    """
    return uncertainty_summary(probs, class_weights)[0]


def tail_class_weights(voxel_counts, beta: float = 0.5) -> np.ndarray:
    """Weights (1 / f_c) ** beta from per-class voxel counts (index = class value), mean 1
    over the foreground. Classes never seen get the largest weight: they are the tail.
    """
    counts = np.asarray(voxel_counts, dtype=np.float64).reshape(-1)
    if counts.size < 2 or np.any(counts < 0):
        raise ValueError(f"voxel_counts needs >= 2 non-negative counts, got {counts}")
    fg = counts[1:]
    seen = fg > 0
    weights = np.ones(counts.size)
    if seen.any():
        freq = fg / fg.sum()
        w = np.empty_like(fg)
        w[seen] = freq[seen] ** -beta
        w[~seen] = w[seen].max()
        weights[1:] = w / w.mean()
    weights[0] = 0.0
    return weights


def rank_next(project, *, n: int = 5, seed: int | None = None) -> list[dict]:
    """Up to ``n`` unlabeled cases to annotate next, best first.

    Cases scored by the latest completed run that stored predictions come first, highest
    uncertainty first; the rest follow in a seeded random order (``seed`` or the project's).
    Cases whose image changed or went missing are left out.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    status = project.status()
    candidates = [c for c in status["cases"] if c["status"] != "labeled" and c["image"] == "ok"]
    row = project.query_one("SELECT MAX(p.run_id) AS run_id FROM predictions p JOIN runs r ON r.id = p.run_id "
                            "JOIN revisions v ON v.id = p.revision_id WHERE r.status = 'completed' AND v.deleted_at IS NULL")
    run_id = None if row is None else row["run_id"]
    scores: dict[str, dict] = {}
    if run_id is not None:
        for pred in project.predictions(run_id):
            scores[pred["case_id"]] = pred  # later predictions of the same case win
    label_map = project.label_map
    scored = sorted((c for c in candidates if c["id"] in scores),
                    key=lambda c: (-scores[c["id"]]["uncertainty"], c["id"]))
    rest = sorted(c["id"] for c in candidates if c["id"] not in scores)
    rng = random.Random(int(project.meta("random_seed", "0")) if seed is None else seed)
    rng.shuffle(rest)
    by_id = {c["id"]: c for c in candidates}
    out = []
    for case in scored:
        pred = scores[case["id"]]
        out.append({"id": case["id"], "status": case["status"], "score": pred["uncertainty"], "run": run_id,
                    "reason": f"uncertainty {pred['uncertainty']:.3f} from run {run_id}",
                    "class_uncertainty": _named(pred["class_uncertainty"], label_map)})
    for case_id in rest:
        why = "random order (no run has scored it yet)" if run_id is None else f"random order (run {run_id} did not score it)"
        out.append({"id": case_id, "status": by_id[case_id]["status"], "score": None, "run": None,
                    "reason": why, "class_uncertainty": None})
    for rank, item in enumerate(out[:n], start=1):
        item["rank"] = rank
    return out[:n]


def _named(per_class: dict | None, label_map) -> dict | None:
    """Per-class scores keyed by class name where the key is a class value."""
    if not per_class:
        return per_class
    named = {}
    for key, value in per_class.items():
        if label_map is not None and str(key).isdigit() and int(key) < label_map.num_classes:
            named[label_map.name_of(int(key))] = value
        else:
            named[str(key)] = value
    return named
