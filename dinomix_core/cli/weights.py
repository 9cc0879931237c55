"""`dinomix weights add FILE` / `dinomix weights list`: install and inspect local DINOv3 weights."""

from __future__ import annotations

import argparse
import os



def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "weights",
        help="install or list DINOv3 teacher weights (local files only, never downloaded)",
        description=(
            "DINOv3 weights are looked up in $DINOMIX_WEIGHTS_DIR, then in the per-user weights "
            "folder (`dinomix weights list` shows it). Get them from Meta's DINOv3 release "
            "(https://github.com/facebookresearch/dinov3) or timm's model.safetensors on Hugging Face."
        ),
    )
    sub = parser.add_subparsers(dest="weights_command", metavar="ACTION", required=True)

    add = sub.add_parser("add", help="verify a weight file and copy it into the user weights folder")
    add.add_argument("file", help="Meta's dinov3_*.pth or timm's .safetensors")
    add.add_argument("--arch", default=None, help="timm architecture, when the file name does not say it")
    add.add_argument("--dir", default=None, help="install into this folder instead of the user folder")
    add.set_defaults(func=_add)

    show = sub.add_parser("list", help="list the weight files found and where they were looked for")
    show.set_defaults(func=_list)


def _add(args: argparse.Namespace) -> int:
    from dinomix_core.io.outputs import check_output_dir
    from dinomix_core.models import weights as W

    # Checked before the file is hashed (seconds for a large ViT): where it will be copied to.
    check_output_dir(args.dir if args.dir is not None else W.user_weights_dir(),
                     option="--dir" if args.dir is not None else None)
    path = W.add_weights(args.file, arch=args.arch, dest_dir=args.dir)
    parsed = W.parse_weights_name(path)
    arch = parsed.arch if parsed else (args.arch or "?")
    print(f"installed {path} ({arch}, sha256 {W.file_sha256(path)[:12]})")
    return 0


def _list(args: argparse.Namespace) -> int:
    from dinomix_core.models import weights as W

    env = os.environ.get(W.ENV_VAR)
    print(f"searched: ${W.ENV_VAR}={env!r}" if env else f"searched: ${W.ENV_VAR} (not set)")
    print(f"          {W.user_weights_dir()} (user folder)")
    found = W.list_weights()
    if not found:
        print("no DINOv3 weights found; add one with `dinomix weights add FILE`")
        return 0
    for item in found:
        print(f"{item.arch:40s} {item.sha256:12s} {item.size / 2**20:10.1f} MiB  {item.path}")
    return 0
