"""Dice across voxel spacings: a model trained at 3 mm, asked for the same CT at 0.8 x 0.8 x 2 mm.

Usage:  .venv/bin/python -m benchmarks.spacing [--steps 500] [--threads 2] [--out bench_spacing]
        [--json benchmarks/results/spacing.json]

Trains one student on the shared real CT (TotalSegmentator example, 3 mm isotropic, BTCV-13
silver-standard labels), supervised (one labeled case, no teacher: the comparison is about
geometry, not about the semi-supervised method), then predicts:

* ``3mm``: the CT on its own grid (the grid it was trained on), cropped to the organs plus 18 mm;
* ``fine_before``: the CT resampled to 0.8 x 0.8 x 2.0 mm (x, y in-plane, z slices; B-spline,
  labels nearest neighbour), predicted on that grid as the code did before target spacings
  (the model's recorded spacing ignored);
* ``fine_after``: the same fine CT, resampled by the model to its recorded 3 mm, the class
  probabilities brought back to the fine grid before the argmax (what ``dinomix predict`` does).

Per-organ Dice (%) of each against the labels on the same grid. The three predictions share
one model, so the differences are the spacing handling alone. Dice only (surface distances
on a 29-million-voxel grid would dominate the run time). Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
REAL_CT = ROOT.parent / "shared" / "data" / "real-ct" / "totalseg_example_3mm"
FINE_SPACING_ZYX = (2.0, 0.8, 0.8)


def dice_per_class(pred: np.ndarray, gt: np.ndarray, names: list[str]) -> dict[str, float | None]:
    """Dice % per foreground class; None where the class is absent from both maps."""
    classes = len(names)
    pred, gt = pred.ravel().astype(np.int64), gt.ravel().astype(np.int64)
    inter = np.bincount(gt[pred == gt], minlength=classes)
    p, g = np.bincount(pred, minlength=classes), np.bincount(gt, minlength=classes)
    out = {}
    for c in range(1, classes):
        out[names[c]] = None if p[c] + g[c] == 0 else round(200.0 * inter[c] / (p[c] + g[c]), 1)
    return out


def _organ_box(ct, gt, margin: int = 6):
    """CT and labels cropped to the organs' bounding box plus ``margin`` voxels (18 mm) per side.

    The scan reaches from the lower thorax to the pelvis; the organs fill its lower half. The
    crop keeps every labeled voxel and spares the fine-grid runs the organ-free slices (a
    third of the voxels): the whole benchmark then fits about 15 minutes of 2 CPU cores.
    """
    from dinomix_core.io import Volume

    hits = np.argwhere(gt.array > 0)
    lo = np.maximum(hits.min(axis=0) - margin, 0)
    hi = np.minimum(hits.max(axis=0) + margin + 1, gt.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo[::-1], hi[::-1]))  # SimpleITK indexes (x, y, z)
    return (Volume.from_sitk(ct.to_sitk()[box], modality="CT"), Volume.from_sitk(gt.to_sitk()[box], modality="SEG"))


def mean(scores: dict) -> float:
    values = [v for v in scores.values() if v is not None]
    return round(float(np.mean(values)), 1) if values else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench_spacing")
    parser.add_argument("--json", default="benchmarks/results/spacing.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from dinomix_core.data.dataset import CaseSpec
    from dinomix_core.engine.config import TrainConfig
    from dinomix_core.engine.events import StepEvent
    from dinomix_core.engine.pipeline import LoadedModel, train_on_specs
    from dinomix_core.io import LabelMap, read_labels, read_volume, resample_to_spacing

    image_path, label_path = REAL_CT / "ct.nii.gz", REAL_CT / "seg_btcv13.nii.gz"
    if not image_path.is_file():
        print(f"shared real CT not found at {REAL_CT}", file=sys.stderr)
        return 2
    labelmap = LabelMap.preset("btcv13")
    out = Path(args.out)
    cfg = TrainConfig(method="supervised", steps=args.steps, student_width=8, student_depth=3,
                      patch_size=(32, 64, 64), batch_labeled=2, optimizer="adamw", lr=3e-3, checkpoint_every=0,
                      seed=0)
    tic = time.perf_counter()
    def report(event):
        if isinstance(event, StepEvent) and (event.step % 50 == 0 or event.step == event.total_steps):
            print(f"step {event.step}/{event.total_steps}: {event.seconds_per_step:.2f} s per step", flush=True)

    result = train_on_specs(cfg, [CaseSpec("real_ct", image_path, label_path)], [], labelmap, out / "run",
                            callbacks=[report])
    train_s = time.perf_counter() - tic
    model = LoadedModel(result.model_path, device="cpu")
    names = list(labelmap.names)

    ct, gt = _organ_box(read_volume(image_path), read_labels(label_path, labelmap=labelmap))
    fine_ct = resample_to_spacing(ct, FINE_SPACING_ZYX, is_label=False, interpolation="bspline")
    fine_gt = resample_to_spacing(gt, FINE_SPACING_ZYX, is_label=True)
    fine_ct.modality = "CT"
    runs = {}

    def run(name, volume, truth, *, recorded_spacing=True):
        saved = model.target_spacing
        if not recorded_spacing:
            model.target_spacing = None  # the old behaviour: predict on whatever grid the file has
        t0 = time.perf_counter()
        labels = model.predict(volume)
        seconds = time.perf_counter() - t0
        model.target_spacing = saved
        assert labels.same_grid(volume)
        scores = dice_per_class(labels.array, truth.array, names)
        runs[name] = {"grid_zyx": list(volume.shape), "spacing_zyx": list(volume.spacing_zyx),
                      "seconds": round(seconds, 1), "mean_dice": mean(scores), "dice": scores}
        print(f"{name:12s} {volume.shape} mean Dice {runs[name]['mean_dice']:.1f}%  ({seconds:.0f} s)", flush=True)

    run("3mm", ct, gt)
    run("fine_before", fine_ct, fine_gt, recorded_spacing=False)
    run("fine_after", fine_ct, fine_gt)
    doc = {
        "command": "python -m benchmarks.spacing " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "data": str(image_path.relative_to(ROOT.parent)),
        "train": {"method": cfg.method, "steps": cfg.steps, "student": "unet3d width 8 depth 3",
                  "patch_zyx": list(cfg.patch_size), "target_spacing_zyx": list(model.target_spacing or ()),
                  "seconds": round(train_s, 1)},
        "fine_spacing_zyx": list(FINE_SPACING_ZYX),
        "evaluated_region": "the organs' bounding box plus 18 mm per side (all labeled voxels)",
        "runs": runs,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.json}")
    organs = [n for n in names[1:] if runs["3mm"]["dice"].get(n) is not None]
    print("organ".ljust(28) + "".join(k.rjust(13) for k in runs))
    for organ in organs:
        print(organ.ljust(28) + "".join(str(runs[k]["dice"][organ]).rjust(13) for k in runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
