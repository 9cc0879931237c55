"""Where an SSL benchmark's HD95 comes from: predicted organ voxels far from the organ.

    python -m benchmarks.ssl_leaks benchmarks/results/ssl_phantom_2026-12-05.json [--far-mm 20]

For each method and organ, over every seed's cleaned test predictions (``predictions_auto``,
what the product shows) against the test labels: the share of predicted voxels more than
``--far-mm`` from the true organ (Euclidean distance in mm on the voxel grid, z, y, x), and
how many slices the prediction's z extent overshoots the organ's (above plus below, mean per
case). HD95 is a 95th percentile of surface distances, so a thin leak that stays connected to
the organ, which no connected-component clean-up removes, sets it as surely as an island.
Needs the run folders the JSON points at (``pred_dir``, ``gt_dir``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from benchmarks.ssl_table import SHORT
from dinomix_core.io import read_labels


def leaks(pred: np.ndarray, gt: np.ndarray, value: int, spacing_zyx, far_mm: float) -> tuple[int, int, int] | None:
    """(predicted voxels, of them farther than ``far_mm`` from the organ, z-slices overshot) for
    class ``value`` of (z, y, x) label maps; None where the organ or its prediction is absent."""
    p, g = pred == value, gt == value
    if not p.any() or not g.any():
        return None
    distance = ndimage.distance_transform_edt(~g, sampling=tuple(float(s) for s in spacing_zyx))
    zp, zg = np.flatnonzero(p.any(axis=(1, 2))), np.flatnonzero(g.any(axis=(1, 2)))
    overshoot = max(0, int(zg.min() - zp.min())) + max(0, int(zp.max() - zg.max()))
    return int(p.sum()), int((p & (distance > far_mm)).sum()), overshoot


def table(doc: dict, far_mm: float) -> str:
    labels = next(iter(doc["runs"].values()))[0]["labels"]
    rows = []
    for method, runs in doc["runs"].items():
        total = {v: [0, 0, 0, 0] for v in range(1, len(labels))}  # voxels, far, overshoot, cases
        for run in runs:
            auto = Path(run["pred_dir"]).with_name("predictions_auto")
            for case in run["per_case"]:
                gt = read_labels(Path(run["gt_dir"]) / f"{case}.nii.gz")
                pred = read_labels(auto / f"{case}.nii.gz").array
                for value in total:
                    found = leaks(pred, gt.array, value, gt.spacing_zyx, far_mm)
                    if found is not None:
                        for i, x in enumerate((*found, 1)):
                            total[value][i] += x
        cells = [f"{100.0 * f / n:.1f}% / {o / c:.1f}" if n else "–" for n, f, o, c in total.values()]
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    head = "| method | " + " | ".join(SHORT.get(name, name) for name in labels[1:]) + " |"
    return "\n".join([f"share of predicted voxels > {far_mm:g} mm from the organ / z-slices overshot per case",
                      "", head, "|---|" + "---:|" * (len(labels) - 1), *rows])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path)
    parser.add_argument("--far-mm", type=float, default=20.0)
    args = parser.parse_args(argv)
    print(table(json.loads(args.result.read_text()), args.far_mm))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
