"""Training options shared by `dinomix train`, `dinomix demo` and `dinomix bench`."""

from __future__ import annotations

import argparse
import dataclasses
import json

from dinomix_core.engine.config import DEFAULT_LR, LR_SCHEDULES, METHODS, TrainConfig, field_default
from dinomix_core.io.errors import DinomixInputError


def triple(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.replace("x", ",").split(",") if p]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected D,H,W (z,y,x voxels), got {text!r}")
    return tuple(parts)


def spacing(text: str) -> tuple[float, float, float]:
    """``--spacing Z,Y,X`` in mm (one value: isotropic)."""
    try:
        parts = [float(p) for p in text.replace("x", ",").split(",") if p.strip()]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or not all(0 < p < float("inf") for p in parts):
        raise argparse.ArgumentTypeError(f"expected Z,Y,X voxel spacing in mm (three positive numbers, e.g. 3,1.5,1.5), got {text!r}")
    return tuple(parts)


def add_training_options(p: argparse.ArgumentParser, *, steps: int | None = None) -> None:
    """The training options; every default is TrainConfig's own (``steps``: another default)."""
    d = field_default
    steps = d("steps") if steps is None else steps
    lrs = ", ".join(f"{name} {lr:g}" for name, lr in DEFAULT_LR.items())
    g = p.add_argument_group("training")
    g.add_argument("--method", choices=METHODS, default=d("method"), help="which parts of DINO-Mix to use (default: dinomix = all)")
    g.add_argument("--teacher", "--teacher-weights", dest="teacher", default="auto", metavar="random|PATH|auto",
                   help="DINOv3 weights file, 'random' (tests/demo: a randomly initialised ViT, reported as such) "
                        "or 'auto' (installed weights; see `dinomix weights`)")
    g.add_argument("--teacher-arch", default=d("teacher"), help="timm DINOv3 architecture")
    g.add_argument("--steps", type=int, default=steps, help=f"training steps (default {steps})")
    g.add_argument("--patch", type=triple, default=d("patch_size"), metavar="D,H,W",
                   help="patch size in voxels (z,y,x; default %s)" % ",".join(map(str, d("patch_size"))))
    g.add_argument("--spacing", type=spacing, default=d("target_spacing"), metavar="Z,Y,X",
                   help="voxel spacing in mm every case is resampled to, and predictions are made at "
                        "(default: the median spacing of the labeled cases; recorded in model.pt)")
    g.add_argument("--batch-labeled", type=int, default=d("batch_labeled"))
    g.add_argument("--batch-unlabeled", type=int, default=d("batch_unlabeled"))
    g.add_argument("--student", default=d("student"), help="student architecture (unet3d, vnet, unet2d, unet2.5d)")
    g.add_argument("--width", type=int, default=d("student_width"), help=f"student base channels (default {d('student_width')})")
    g.add_argument("--depth", type=int, default=d("student_depth"), help=f"student down-sampling steps (default {d('student_depth')})")
    g.add_argument("--optimizer", choices=tuple(DEFAULT_LR), default=d("optimizer"),
                   help="sgd: the DHC protocol (Nesterov, poly); adamw: converges in far fewer steps")
    g.add_argument("--lr", type=float, default=d("lr"), help=f"learning rate (default: the optimizer's, {lrs})")
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d("lr_schedule"),
                   help=f"learning-rate decay after the warm-up (default {d('lr_schedule')})")
    g.add_argument("--warmup", type=float, default=d("warmup_fraction"), metavar="FRACTION",
                   help=f"share of the steps with a linear learning-rate warm-up (default {d('warmup_fraction'):g})")
    g.add_argument("--lambda-u", type=float, default=d("lambda_u"),
                   help=f"weight of the pseudo-label loss on unlabeled/mixed volumes (default {d('lambda_u'):g}; 1.0 lets the "
                        "EMA teacher's early mistakes collapse minority organs)")
    g.add_argument("--seed", type=int, default=d("seed"))
    g.add_argument("--token-stride", type=int, default=d("token_stride"),
                   help=f"voxels per DINOv3 token in-plane (default {d('token_stride')}; 4 for small organs on GPU)")
    g.add_argument("--token-source", choices=("cache", "online"), default=d("token_source"),
                   help="cache: teacher tokens once per volume (default); online: a teacher forward per step (ablation)")
    g.add_argument("--val-every", type=int, default=d("val_every"),
                   help="validate every N steps (--data: needs --val; --project: 0 = every steps/5)")
    g.add_argument("--checkpoint-every", type=int, default=d("checkpoint_every"))
    g.add_argument("--no-augment", action="store_true", help="no flips / intensity augmentation")
    g.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    g.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: CUDA when present")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch (torch.set_num_threads)")


# TrainConfig field -> the argparse dest that sets it (booleans set by a --no-X flag are
# inverted). The one table behind config_from_args and the option names in messages.
OPTION_OF = {
    "method": "method", "student": "student", "student_width": "width", "student_depth": "depth",
    "patch_size": "patch", "target_spacing": "spacing", "batch_labeled": "batch_labeled",
    "batch_unlabeled": "batch_unlabeled", "steps": "steps", "optimizer": "optimizer", "lr": "lr",
    "lr_schedule": "lr_schedule", "warmup_fraction": "warmup", "lambda_u": "lambda_u", "seed": "seed",
    "teacher": "teacher_arch", "token_stride": "token_stride", "token_source": "token_source",
    "val_every": "val_every", "checkpoint_every": "checkpoint_every", "augment": "no_augment", "amp": "no_amp",
}
_NEGATED = {"augment", "amp"}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    fields = {}
    for name, dest in OPTION_OF.items():
        if not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        fields[name] = (not value) if name in _NEGATED else value
    try:
        return TrainConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise DinomixInputError(None, f"training options: {exc}.", "fix the option and run again.") from None


def parse_overrides(items: list[str], option: str = "--set") -> dict:
    """``FIELD=VALUE`` pairs naming TrainConfig fields; values are JSON when they parse
    (numbers, true/false, lists such as [16,64,64]), else plain text."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in names:
            raise DinomixInputError(None, f"{option} {item!r}: expected FIELD=VALUE with FIELD a training-config field.",
                                    f"use e.g. {option} lr=0.005 (fields: {', '.join(sorted(names))}).")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def teacher_weights(args: argparse.Namespace) -> str | None:
    return None if args.teacher in (None, "auto") else args.teacher


def apply_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
