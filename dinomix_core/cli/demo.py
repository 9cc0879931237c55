"""`dinomix demo`: the whole product loop on embedded phantom data, on CPU, in a few minutes.

Generate an imbalanced phantom cohort → train DINO-Mix with 2 labeled + the rest unlabeled →
predict the held-out cases → per-class Dice table, report.json, a NIfTI prediction and a PNG
overlay of a slice. The teacher is the installed DINOv3 when present, else a random ViT of the
same architecture, and every output says which.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from dinomix_core.cli._progress import ConsoleProgress
from dinomix_core.cli._train_args import triple


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the full train → predict → evaluate loop on phantom data (CPU, minutes)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--cases", type=int, default=12, help="phantom cases in total (default 12: 2 labeled, 8 unlabeled, 2 test)")
    p.add_argument("--labeled", type=int, default=2)
    p.add_argument("--test", type=int, default=2, help="held-out cases to predict and score")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--method", default="dinomix")
    p.add_argument("--patch", type=triple, default=(16, 64, 64), metavar="D,H,W")
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--teacher", default="auto", metavar="auto|random|PATH",
                   help="auto: installed DINOv3 weights if any, else a random teacher (said plainly)")
    p.add_argument("--token-stride", type=int, default=8, help="voxels per DINOv3 token in-plane")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from dinomix_core.data.phantom import write_phantom_dataset
    from dinomix_core.cli.evaluate import format_report
    from dinomix_core.engine.evaluation import evaluate_folders
    from dinomix_core.engine.pipeline import LoadedModel, predict_file, train_on_dataset
    from dinomix_core.io import read_labels, read_volume
    from dinomix_core.io.atomic import atomic_write_text
    from dinomix_core.io.snapshot import overlay_rgb, save_overlay_png
    from dinomix_core.models.weights import MissingWeightsError, find_weights

    config = _checked_config(args)  # before any case is generated or any step runs
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = out / "data"
    tic = time.perf_counter()
    if not (data / "dataset.json").exists():
        print(f"[phantom] generating {args.cases} cases in {data}", file=sys.stderr)
        write_phantom_dataset(data, args.cases, args.seed, "small")
    case_ids = sorted(p.name[: -len(".nii.gz")] for p in (data / "labelsTr").glob("*.nii.gz"))
    test_ids = case_ids[-args.test:]
    teacher = args.teacher
    if teacher == "auto":
        try:
            find_weights("vit_small_patch16_dinov3")
        except MissingWeightsError:
            teacher = "random"
            print("[teacher] no DINOv3 weights installed: using a RANDOM teacher (FKD is then only a plumbing check; "
                  "install weights with `dinomix weights add FILE` for real results)", file=sys.stderr)
    run_dir = out / "run"
    progress = ConsoleProgress()
    try:
        result = train_on_dataset(config, data, args.labeled, run_dir, exclude=test_ids,
                                  teacher_weights=None if teacher == "auto" else teacher,
                                  callbacks=[progress], cache_dir=out / "token_cache")
    finally:
        progress.close()
    model = LoadedModel(result.model_path)
    pred_dir = out / "predictions"
    for cid in test_ids:
        predict_file(model, data / "imagesTr" / f"{cid}_0000.nii.gz", pred_dir / f"{cid}.nii.gz")
    gt_dir = out / "test_labels"
    gt_dir.mkdir(parents=True, exist_ok=True)
    for cid in test_ids:
        shutil.copyfile(data / "labelsTr" / f"{cid}.nii.gz", gt_dir / f"{cid}.nii.gz")
    report = evaluate_folders(pred_dir, gt_dir, model.labelmap, tail_k=3)
    print(format_report(report))
    teacher_note = model.teacher_note
    print(f"\nteacher: {teacher_note}")

    # A slice through the left adrenal gland: where a collapsed tail class would show first.
    cid = test_ids[0]
    image = read_volume(data / "imagesTr" / f"{cid}_0000.nii.gz")
    gt = read_labels(data / "labelsTr" / f"{cid}.nii.gz", reference=image).array
    pred = read_labels(pred_dir / f"{cid}.nii.gz", reference=image).array
    z = _slice_with_most_classes(gt)
    png = save_overlay_png(out / "overlay.png", [
        overlay_rgb(image.array[z], np.zeros_like(gt[z]), model.labelmap),
        overlay_rgb(image.array[z], gt[z], model.labelmap),
        overlay_rgb(image.array[z], pred[z], model.labelmap),
    ])
    doc = {
        "method": config.method,
        "teacher": teacher_note,
        "random_teacher": teacher_note.startswith("RANDOM TEACHER"),
        "labeled": case_ids[: args.labeled],
        "test": test_ids,
        "steps": config.steps,
        "seconds": round(time.perf_counter() - tic, 1),
        "model": str(result.model_path),
        "predictions": str(pred_dir),
        "overlay_png": str(png),
        "overlay_slice_z": int(z),
        **report,
    }
    atomic_write_text(out / "report.json", json.dumps(doc, indent=1))
    print(f"report:  {out / 'report.json'}\noverlay: {png} (image | ground truth | prediction, slice z={z})")
    return 0


def _checked_config(args: argparse.Namespace):
    """The demo's training settings and output folder, refused (one line, exit 2) before slow work."""
    from dinomix_core.engine.config import METHODS, TrainConfig
    from dinomix_core.engine.config_checks import check_split
    from dinomix_core.engine.devices import resolve_device
    from dinomix_core.io.errors import DinomixInputError
    from dinomix_core.io.outputs import check_output_dir

    if args.method not in METHODS:
        raise DinomixInputError(None, f"--method {args.method}: not a method.", f"choose one of {', '.join(METHODS)}.")
    if args.test < 1:
        raise DinomixInputError(None, f"--test {args.test}: the demo scores at least 1 held-out case.", "pass --test 1 or more.")
    config = TrainConfig(
        method=args.method, student="unet3d", student_width=args.width, student_depth=args.depth,
        patch_size=args.patch, steps=args.steps, seed=args.seed, optimizer="adamw", lr=3e-3,
        token_stride=args.token_stride, checkpoint_every=max(args.steps // 4, 1),
    )
    names = {"steps": "--steps", "patch_size": "--patch", "student_width": "--width", "student_depth": "--depth",
             "token_stride": "--token-stride", "seed": "--seed"}
    config.validate(device=resolve_device(None), names=names)
    check_split(config, args.labeled, args.cases - args.test - args.labeled, f"--cases {args.cases}")
    check_output_dir(args.out, option="--out")
    return config


def _slice_with_most_classes(labels: np.ndarray) -> int:
    counts = [len(np.unique(labels[z])) for z in range(labels.shape[0])]
    return int(np.argmax(counts))
