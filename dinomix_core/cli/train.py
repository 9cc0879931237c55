"""`dinomix train`: semi-supervised training on an nnU-Net folder or an annotation project.

``--project`` goes through :func:`dinomix_core.engine.jobs.run_train_job`, the job the GUI
runs. Ctrl-C stops at the next step, batch or case and records the run as cancelled
(``--resume`` continues it); a second Ctrl-C aborts at once.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path

from dinomix_core.cli._progress import ConsoleProgress
from dinomix_core.cli._train_args import OPTION_OF, add_training_options, apply_threads, config_from_args, teacher_weights
from dinomix_core.io.errors import DinomixInputError

RUN_FILES = ("model.pt", "last.pt", "run.json")
EXIT_CANCELLED = 130


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
    p.add_argument("--val", default="", metavar="ID,ID",
                   help="with --data: labeled case ids used for validation only; with --project: the labeled case to "
                        "hold out (used with 3 or more labeled cases; default: the last labeled case)")
    p.add_argument("--out", default=None,
                   help="run folder: model.pt, last.pt, run.json (required with --data; with --project default: "
                        "the project's runs/run-NNNN)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last.pt (with --project: the project's latest unfinished run)")
    p.add_argument("--force", action="store_true", help="replace the run already in --out: its model.pt, last.pt and run.json are moved to --out/replaced-TIME/ first "
                        "(without --force or --resume such an --out is refused)")
    p.add_argument("--no-predict", action="store_true", help="with --project: do not store predictions afterwards")
    p.add_argument("--cache-dir", default=None, help="teacher-token cache (default: per-user cache or the project's cache/)")
    add_training_options(p)
    # What each option is when not given: a resumed project run keeps its recorded settings for those.
    p.set_defaults(func=run, option_defaults={a.dest: a.default for a in p._actions})


def run(args: argparse.Namespace) -> int:
    config, device = _check_before_slow_work(args)
    apply_threads(args)
    from dinomix_core.engine.distributed import init_distributed, shutdown_distributed

    dist = init_distributed(None if args.device is None else device.type)
    progress = ConsoleProgress(quiet=not dist.is_main)
    try:
        if args.project:
            return _train_project(args, config, dist, progress)
        from dinomix_core.engine.pipeline import train_on_dataset

        result = train_on_dataset(
            config, args.data, _labeled_spec(args), args.out, exclude=_ids(args.exclude), val_ids=_ids(args.val),
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


def option_names() -> dict[str, str]:
    """Config field -> the option that sets it (``student_depth`` -> ``--depth``), for messages."""
    return {field: "--" + option.replace("_", "-") for field, option in OPTION_OF.items()}


def _check_before_slow_work(args: argparse.Namespace):
    """Every check that needs no case, token or teacher: options, device, output folder, resume.

    Returns ``(config, device)``. Nothing is written before these pass.
    """
    from dinomix_core.engine.devices import resolve_device
    from dinomix_core.io.outputs import check_output_dir

    if args.data and not args.out:
        raise DinomixInputError(args.data, "needs --out, the run folder to write model.pt and last.pt to.",
                                "pass --out RUN_FOLDER.")
    if args.project and args.labeled is not None:
        raise DinomixInputError(args.project, "--labeled is for --data: a project's labeled cases are its cases "
                                "with a final human label.", "drop --labeled (label cases with `dinomix project label`).")
    if args.data:
        _labeled_spec(args)
    device = resolve_device(args.device)
    config = config_from_args(args)
    names = option_names()
    # A resumed project run takes its recorded settings for options not given: the job checks
    # the memory those need; the command line's own values are checked here.
    config.validate(device=None if (args.project and args.resume) else device, names=names)
    if args.out:
        check_output_dir(args.out, option="--out")
    if args.data and args.resume:
        from dinomix_core.engine.checkpoint import check_resumable

        check_resumable(args.out, config, names=names)
    if args.out and not args.resume:
        _refuse_existing_run(Path(args.out), force=args.force)
    return config, device


def _labeled_spec(args: argparse.Namespace):
    """``--labeled`` as the data set loader takes it: a count, an id list or a split file."""
    if args.labeled is None:
        raise DinomixInputError(args.data, "needs --labeled to say which cases are labeled.",
                                "pass --labeled N (first N cases), --labeled ID,ID or --labeled split.txt.")
    text = args.labeled.strip()
    if text.lstrip("+-").isdigit():
        count = int(text)
        if count < 1:
            raise DinomixInputError(None, f"--labeled {args.labeled}: training needs at least one labeled case.",
                                    "pass --labeled 1 or more (the first N cases), or a list of case ids.")
        return count
    if not _ids(text) and not Path(text).is_file():
        raise DinomixInputError(None, f"--labeled {args.labeled!r} names no case.", "pass N, ID,ID or a split file.")
    return text


def _refuse_existing_run(out: Path, *, force: bool) -> None:
    """A folder that holds a run is not silently trained over: --resume continues it, --force replaces it."""
    found = [name for name in RUN_FILES if (out / name).exists()]
    if not found:
        return
    if not force:
        raise DinomixInputError(out, f"already holds a training run ({', '.join(found)}).",
                                "pass --force to overwrite or --resume to continue.")
    # Moved aside, never deleted: a typo elsewhere on the command line (checked later) must not
    # cost the user the old model; a stale last.pt must not be resumed by the new run either.
    import time

    keep = out / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    keep.mkdir(exist_ok=True)
    for name in found:
        (out / name).replace(keep / name)
    print(f"the earlier run's {', '.join(found)} moved to {keep}", file=sys.stderr)


def _train_project(args: argparse.Namespace, config, dist, progress: ConsoleProgress) -> int:
    from dinomix_core.engine.events import CancelToken, FinishedEvent, ValidationEvent
    from dinomix_core.engine.jobs import TrainJobSpec, run_train_job

    val = _ids(args.val)
    if len(val) > 1:
        raise DinomixInputError(None, f"--val names {len(val)} cases; a project run holds out one.", "pass one case id.")
    fields = config.to_dict()
    if args.resume:  # keep what the run recorded for what was not given on the command line
        fields = {k: v for k, v in fields.items() if _given(args, k)}
    spec = TrainJobSpec(
        project_dir=args.project, config=fields, teacher_weights=teacher_weights(args), resume=args.resume,
        validation_case=val[0] if val else None, predict_unlabeled=not args.no_predict, cache_dir=args.cache_dir,
        out_dir=args.out,
    )
    seen: dict = {}

    def remember(event) -> None:
        if isinstance(event, ValidationEvent):
            seen["validation"] = event

    cancel = CancelToken()
    with _ctrl_c_cancels(cancel, enabled=not dist.enabled and dist.is_main):
        finished: FinishedEvent = run_train_job(spec, [progress, remember], cancel, dist=dist)
    progress.close()
    if finished.status == "failed":
        if finished.input_error:
            raise DinomixInputError(None, finished.message)
        print(f"error: training failed: {finished.message}", file=sys.stderr)
        return 1
    if finished.status == "cancelled":
        print(f"cancelled: {finished.message}", file=sys.stderr)
        return EXIT_CANCELLED
    if dist.is_main:
        model = Path(finished.model_path)
        print(f"model: {model}\nrun:   {model.parent / 'run.json'}")
        val_event = seen.get("validation")
        if val_event is not None and val_event.mean_dice is not None:
            where = "held-out " + ", ".join(val_event.cases) if val_event.held_out else "training cases, not held out"
            print(f"validation mean Dice {val_event.mean_dice:.1f}% ({where})")
    return 0


def _given(args: argparse.Namespace, field: str) -> bool:
    """Whether the command line set the option behind config ``field`` (not left at its default)."""
    option = OPTION_OF.get(field)
    if option is None:
        return False
    defaults = getattr(args, "option_defaults", None)
    if defaults is None or option not in defaults:
        return True
    return getattr(args, option) != defaults[option]


@contextlib.contextmanager
def _ctrl_c_cancels(cancel, *, enabled: bool):
    """First Ctrl-C cancels the job gracefully (state saved, run recorded); a second aborts."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum, frame):
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel()
        print("\nstopping at the next step (Ctrl-C again to abort)...", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
