"""`dinomix phantom`: write the built-in abdominal CT phantom as an nnU-Net data set."""

from __future__ import annotations

import argparse
from pathlib import Path

from dinomix_core.data.phantom import PHANTOM_SIZES, write_phantom_dataset
from dinomix_core.io.outputs import check_output_dir


def register(subparsers) -> None:
    sizes = ", ".join(
        f"{name} = {'x'.join(map(str, s.shape_zyx))} voxels at {'x'.join(f'{v:g}' for v in s.spacing_zyx)} mm (z, y, x)"
        for name, s in PHANTOM_SIZES.items()
    )
    parser = subparsers.add_parser(
        "phantom",
        help="generate the built-in abdominal CT phantom (BTCV-13 labels)",
        description=(
            "Generate a procedural abdominal CT phantom with the 13 BTCV organs and the class "
            "imbalance of real CT, as an nnU-Net data set (imagesTr/, labelsTr/, dataset.json). "
            f"Deterministic for a given seed. Sizes: {sizes}."
        ),
    )
    parser.add_argument("--out", required=True, type=Path, help="output data set folder (created)")
    parser.add_argument("--cases", type=int, default=8, help="number of cases (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="data set seed (default: 0)")
    parser.add_argument("--size", choices=sorted(PHANTOM_SIZES), default="small", help="grid size (default: small)")
    parser.add_argument("--force", action="store_true", help="replace a data set already in --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Before any case is generated. The new data set is built in a sibling folder and swapped
    # in, so the folder above --out must be writable too.
    out = check_output_dir(args.out, option="--out")
    if out.is_dir():
        check_output_dir(out.resolve().parent, option="--out")

    def progress(done: int, total: int, cid: str) -> None:
        print(f"[{done}/{total}] {cid}", flush=True)

    stats = write_phantom_dataset(args.out, args.cases, args.seed, args.size, progress, overwrite=args.force)
    print(f"wrote {len(stats['case_ids'])} cases to {stats['out_dir']} "
          f"({stats['seconds_per_case']:.2f} s per case to generate)")
    print(format_fraction_table(stats))
    return 0


def format_fraction_table(stats: dict) -> str:
    """Per-class voxel counts and fractions (%) over all generated cases, one row per class."""
    rows = [f"{'class':<30} {'voxels':>12} {'fraction %':>11}"]
    for value, (name, count) in enumerate(stats["voxel_counts"].items()):
        rows.append(f"{f'{value} {name}':<30} {count:>12d} {100.0 * stats['fractions'][name]:>11.4f}")
    return "\n".join(rows)
