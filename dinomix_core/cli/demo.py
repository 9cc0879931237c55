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
from dinomix_core.cli._train_args import parse_overrides, triple
from dinomix_core.engine.config import field_default
from dinomix_core.engine.presets import PRESETS

DEMO_CASES = 12  # 2 labeled + 8 unlabeled + 2 held out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the full train → predict → evaluate loop on phantom data (CPU, minutes)",
                       description=__doc__.split("\n\n")[0] + " Training settings: the 'quick' preset "
                       "(dinomix_core/engine/presets.py), the GUI's Better first model.")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--cases", type=int, default=DEMO_CASES,
                   help=f"phantom cases in total (default {DEMO_CASES}: 2 labeled, the rest unlabeled but --test)")
    p.add_argument("--labeled", type=int, default=2)
    p.add_argument("--test", type=int, default=2, help="held-out cases to predict and score")
    p.add_argument("--method", default="dinomix")
    quick = PRESETS["quick"]
    p.add_argument("--steps", type=int, default=None, help=f"training steps (default: the preset's {quick['steps']})")
    p.add_argument("--patch", type=triple, default=None, metavar="D,H,W",
                   help="patch (z,y,x voxels; default: the preset's %s)" % ",".join(map(str, quick["patch_size"])))
    p.add_argument("--width", type=int, default=None, help=f"student base channels (default: the preset's {quick['student_width']})")
    p.add_argument("--depth", type=int, default=None, help=f"student down-sampling steps (default: the preset's {quick['student_depth']})")
    p.add_argument("--teacher", default="auto", metavar="auto|random|PATH",
                   help="auto: installed DINOv3 weights if any, else a random teacher (said plainly)")
    p.add_argument("--token-stride", type=int, default=None,
                   help=f"voxels per DINOv3 token in-plane (default: the preset's {quick.get('token_stride', field_default('token_stride'))})")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="overrides",
                   help="override any training-config field, e.g. --set lr=0.005 (repeatable; values are JSON when they parse)")
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
    from dinomix_core.cli._demo_figure import save_demo_overlay
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
    stages = _StageClock(tic)
    try:
        result = train_on_dataset(config, data, args.labeled, run_dir, exclude=test_ids,
                                  teacher_weights=None if teacher == "auto" else teacher,
                                  callbacks=[progress, stages], cache_dir=out / "token_cache")
    finally:
        progress.close()
    stages.mark("predicting")
    model = LoadedModel(result.model_path)
    pred_dir = out / "predictions"
    for cid in test_ids:
        predict_file(model, data / "imagesTr" / f"{cid}_0000.nii.gz", pred_dir / f"{cid}.nii.gz")
    gt_dir = out / "test_labels"
    gt_dir.mkdir(parents=True, exist_ok=True)
    for cid in test_ids:
        shutil.copyfile(data / "labelsTr" / f"{cid}.nii.gz", gt_dir / f"{cid}.nii.gz")
    report = evaluate_folders(pred_dir, gt_dir, model.labelmap, tail_k=3)
    stages.mark("report")
    print(format_report(report))
    teacher_note = model.teacher_note
    print(f"\nteacher: {teacher_note}")

    # The axial slice that cuts the most organs, so most classes can be judged on one figure.
    cid = test_ids[0]
    image = read_volume(data / "imagesTr" / f"{cid}_0000.nii.gz")
    gt = read_labels(data / "labelsTr" / f"{cid}.nii.gz", reference=image).array
    pred = read_labels(pred_dir / f"{cid}.nii.gz", reference=image).array
    z = _slice_with_most_classes(gt)
    mean = "n/a" if report.get("mean_dice") is None else f"{report['mean_dice']:.1f}%"
    title = (f"{cid}, slice z={z}: {config.method}, {config.steps} steps, held-out mean Dice {mean}"
             + (" (random teacher)" if teacher_note.startswith("RANDOM") else ""))
    png = save_demo_overlay(out / "overlay.png", image.array[z], gt[z], pred[z], model.labelmap, title=title)
    stages.mark("end")
    seconds = time.perf_counter() - tic
    doc = {
        "method": config.method,
        "teacher": teacher_note,
        "random_teacher": teacher_note.startswith("RANDOM TEACHER"),
        "labeled": case_ids[: args.labeled],
        "test": test_ids,
        "steps": config.steps,
        "config": config.to_dict(),
        "seconds": round(seconds, 1),
        "seconds_by_stage": {k: round(v, 1) for k, v in stages.seconds.items()},
        "cpu_seconds": round(_cpu_seconds(), 1),
        "load_average": _load_average(),
        "model": str(result.model_path),
        "predictions": str(pred_dir),
        "overlay_png": str(png),
        "overlay_slice_z": int(z),
        **report,
    }
    atomic_write_text(out / "report.json", json.dumps(doc, indent=1, default=list))
    print(f"report:  {out / 'report.json'}\noverlay: {png} (image | ground truth | prediction, slice z={z})")
    print(f"elapsed: {seconds:.0f} s ({_stage_line(stages.seconds)}); held-out mean Dice {mean}")
    return 0


def _checked_config(args: argparse.Namespace):
    """The demo's training settings and output folder, refused (one line, exit 2) before slow work."""
    from dinomix_core.engine.config import METHODS
    from dinomix_core.engine.presets import preset_config
    from dinomix_core.engine.config_checks import check_split
    from dinomix_core.engine.devices import resolve_device
    from dinomix_core.io.errors import DinomixInputError
    from dinomix_core.io.outputs import check_output_dir

    if args.method not in METHODS:
        raise DinomixInputError(None, f"--method {args.method}: not a method.", f"choose one of {', '.join(METHODS)}.")
    if args.test < 1:
        raise DinomixInputError(None, f"--test {args.test}: the demo scores at least 1 held-out case.", "pass --test 1 or more.")
    given = {"steps": args.steps, "patch_size": args.patch, "student_width": args.width,
             "student_depth": args.depth, "token_stride": args.token_stride}
    fields = {k: v for k, v in given.items() if v is not None}
    fields.update(parse_overrides(args.overrides))
    fields.update(method=args.method, seed=args.seed)
    try:
        config = preset_config("quick", **fields)
    except (TypeError, ValueError) as exc:
        raise DinomixInputError(None, f"demo training settings: {exc}.", "fix the option or --set value.") from None
    config.checkpoint_every = max(config.steps // 4, 1)
    names = {"steps": "--steps", "patch_size": "--patch", "student_width": "--width", "student_depth": "--depth",
             "token_stride": "--token-stride", "seed": "--seed"}
    config.validate(device=resolve_device(None), names=names)
    check_split(config, args.labeled, args.cases - args.test - args.labeled, f"--cases {args.cases}")
    check_output_dir(args.out, option="--out")
    return config


def _slice_with_most_classes(labels: np.ndarray) -> int:
    counts = [len(np.unique(labels[z])) for z in range(labels.shape[0])]
    return int(np.argmax(counts))


class _StageClock:
    """Wall seconds per stage of the demo (data, teacher tokens, training, prediction), from events."""

    _NAMES = {"loading": "data", "teacher-tokens": "teacher tokens", "training": "training"}

    def __init__(self, start: float):
        self.seconds: dict[str, float] = {}
        self._stage, self._since = "data", start

    def __call__(self, event) -> None:
        from dinomix_core.engine.events import StageEvent, StepEvent

        if isinstance(event, StepEvent):
            self.mark("training")
        elif isinstance(event, StageEvent) and event.stage in self._NAMES:
            self.mark(self._NAMES[event.stage])

    def mark(self, stage: str) -> None:
        if stage == self._stage:
            return
        now = time.perf_counter()
        self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + now - self._since
        self._stage, self._since = stage, now


def _stage_line(seconds: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items() if value >= 0.5)


def _cpu_seconds() -> float:
    """CPU seconds of this process (all threads): with the wall time it shows how much the
    machine was shared (on 2 idle cores, CPU ~ 2 x wall)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _load_average() -> list[float] | None:
    try:
        import os

        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None
