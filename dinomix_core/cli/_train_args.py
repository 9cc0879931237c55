"""Training options shared by `dinomix train`, `dinomix demo` and `dinomix bench`."""

from __future__ import annotations

import argparse

from dinomix_core.engine.config import METHODS, TrainConfig


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


def add_training_options(p: argparse.ArgumentParser, *, steps: int = 1000) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--method", choices=METHODS, default="dinomix", help="which parts of DINO-Mix to use (default: dinomix = all)")
    g.add_argument("--teacher", "--teacher-weights", dest="teacher", default="auto", metavar="random|PATH|auto",
                   help="DINOv3 weights file, 'random' (tests/demo: a randomly initialised ViT, reported as such) "
                        "or 'auto' (installed weights; see `dinomix weights`)")
    g.add_argument("--teacher-arch", default="vit_small_patch16_dinov3", help="timm DINOv3 architecture")
    g.add_argument("--steps", type=int, default=steps, help=f"training steps (default {steps})")
    g.add_argument("--patch", type=triple, default=(64, 128, 128), metavar="D,H,W", help="patch size in voxels (z,y,x)")
    g.add_argument("--spacing", type=spacing, default=None, metavar="Z,Y,X",
                   help="voxel spacing in mm every case is resampled to, and predictions are made at "
                        "(default: the median spacing of the labeled cases; recorded in model.pt)")
    g.add_argument("--batch-labeled", type=int, default=2)
    g.add_argument("--batch-unlabeled", type=int, default=2)
    g.add_argument("--student", default="unet3d", help="student architecture (unet3d, vnet, unet2d)")
    g.add_argument("--width", type=int, default=16, help="student base channels")
    g.add_argument("--depth", type=int, default=4, help="student down-sampling steps")
    g.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd",
                   help="sgd: the DHC protocol (lr 0.03, Nesterov, poly); adamw: converges in far fewer steps (use --lr 3e-3)")
    g.add_argument("--lr", type=float, default=0.03)
    g.add_argument("--lambda-u", type=float, default=0.1,
                   help="weight of the pseudo-label loss on unlabeled/mixed volumes (default 0.1; 1.0 lets the "
                        "EMA teacher's early mistakes collapse minority organs)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--token-stride", type=int, default=8, help="voxels per DINOv3 token in-plane (4 for small organs on GPU)")
    g.add_argument("--token-source", choices=("cache", "online"), default="cache",
                   help="cache: teacher tokens once per volume (default); online: a teacher forward per step (ablation)")
    g.add_argument("--val-every", type=int, default=0, help="validate every N steps (--data: needs --val; --project: 0 = every steps/5)")
    g.add_argument("--checkpoint-every", type=int, default=50)
    g.add_argument("--no-augment", action="store_true")
    g.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    g.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: CUDA when present")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch (torch.set_num_threads)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        method=args.method,
        student=args.student,
        student_width=args.width,
        student_depth=args.depth,
        patch_size=args.patch,
        target_spacing=getattr(args, "spacing", None),
        batch_labeled=args.batch_labeled,
        batch_unlabeled=args.batch_unlabeled,
        steps=args.steps,
        optimizer=args.optimizer,
        lr=args.lr,
        lambda_u=args.lambda_u,
        seed=args.seed,
        teacher=args.teacher_arch,
        token_stride=args.token_stride,
        token_source=args.token_source,
        val_every=args.val_every,
        checkpoint_every=args.checkpoint_every,
        augment=not args.no_augment,
        amp=not args.no_amp,
    )


def teacher_weights(args: argparse.Namespace) -> str | None:
    return None if args.teacher in (None, "auto") else args.teacher


def apply_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
