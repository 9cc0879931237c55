"""`dinomix train`: semi-supervised training on an nnU-Net folder or an annotation project."""

from __future__ import annotations

import argparse

from dinomix_core.cli._progress import ConsoleProgress
from dinomix_core.cli._train_args import add_training_options, apply_threads, config_from_args, teacher_weights
from dinomix_core.io.errors import DinomixInputError


def _ids(text: str | None) -> list[str]:
    return [t for t in (text or "").split(",") if t]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a DINO-Mix model (labeled + unlabeled CT)",
        description="Train a student on N labeled cases plus all other cases as unlabeled. "
        "Runs on CUDA when present; multi-GPU/multi-node: torchrun --nproc_per_node N -m dinomix_core.cli train ...",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="nnU-Net data set folder (imagesTr/, labelsTr/, dataset.json)")
    src.add_argument("--project", help="annotation project folder: final human labels are labeled, the rest unlabeled")
    p.add_argument("--labeled", default=None, metavar="N|ID,ID|FILE",
                   help="with --data: the first N cases (sorted), a comma list of case ids, or a split file of ids")
    p.add_argument("--exclude", default="", metavar="ID,ID", help="case ids kept out of training (held-out test)")
    p.add_argument("--val", default="", metavar="ID,ID", help="labeled case ids used for validation only")
    p.add_argument("--out", required=True, help="run folder: model.pt, last.pt, run.json")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--cache-dir", default=None, help="teacher-token cache (default: per-user cache or the project's cache/)")
    add_training_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    apply_threads(args)
    from dinomix_core.engine.distributed import init_distributed, shutdown_distributed

    config = config_from_args(args)
    dist = init_distributed(args.device)
    progress = ConsoleProgress(quiet=not dist.is_main)
    try:
        if args.project:
            from dinomix_core.engine.project_training import train_project

            result = train_project(
                args.project, config, out_dir=args.out, teacher_weights=teacher_weights(args),
                callbacks=[progress], dist=dist, resume=args.resume, cache_dir=args.cache_dir,
            )
        else:
            if args.labeled is None:
                raise DinomixInputError(args.data, "needs --labeled to say which cases are labeled.",
                                        "pass --labeled N (first N cases), --labeled ID,ID or --labeled split.txt.")
            from dinomix_core.engine.pipeline import train_on_dataset

            labeled = int(args.labeled) if args.labeled.isdigit() else args.labeled
            result = train_on_dataset(
                config, args.data, labeled, args.out, exclude=_ids(args.exclude), val_ids=_ids(args.val),
                teacher_weights=teacher_weights(args), callbacks=[progress], dist=dist, resume=args.resume,
                cache_dir=args.cache_dir,
            )
    finally:
        progress.close()
        shutdown_distributed()
    if dist.is_main:
        print(f"model: {result.model_path}\nrun:   {result.run_json}")
        if result.validation and result.validation.get("mean_dice") is not None:
            print(f"validation mean Dice {result.validation['mean_dice']:.1f}%")
    return 0
