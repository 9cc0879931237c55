"""`dinomix evaluate`: Dice, HD95 and ASD per class of predicted label maps vs ground truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dinomix_core.engine.evaluation import evaluate_folders
from dinomix_core.io.atomic import atomic_write_text
from dinomix_core.io.errors import DinomixInputError
from dinomix_core.io.outputs import check_output_file
from dinomix_core.io.paths import files_in, refuse_overwriting_inputs


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score predicted label maps against ground truth (Dice %%, HD95, ASD in mm)",
        description=(
            "Match prediction files (<case>.nii.gz) to ground-truth files (a labelsTr-like folder) "
            "by case id and report per-class Dice (%), HD95 and ASD (mm), averaged over cases "
            "then classes; classes absent from both are excluded, never scored as Dice 1. "
            "Also reports the mean over the k rarest classes (tail)."
        ),
    )
    parser.add_argument("--pred", required=True, type=Path, help="folder of predicted label maps")
    parser.add_argument("--gt", required=True, type=Path, help="folder of ground-truth label maps (e.g. labelsTr)")
    parser.add_argument("--labels", type=Path, default=None,
                        help="dataset.json with the class names (default: the one in or above --gt)")
    parser.add_argument("--json", type=Path, default=None, help="also write the full report (per case too) here")
    parser.add_argument("--tail-k", type=int, default=3, help="number of rarest classes in the tail mean (default: 3)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.tail_k < 0:
        raise DinomixInputError(None, f"--tail-k must be >= 0 (got {args.tail_k}).")
    if args.json is not None:
        labels = args.labels if args.labels is None or args.labels.is_file() else args.labels / "dataset.json"
        inputs = [*files_in(args.pred), *files_in(args.gt), labels, args.gt / "dataset.json",
                  args.gt.parent / "dataset.json"]
        refuse_overwriting_inputs([args.json], inputs, fix="pass a --json path outside the --pred and --gt folders.")
        check_output_file(args.json, option="--json")  # before the (slow) surface distances
    report = evaluate_folders(args.pred, args.gt, args.labels, args.tail_k)
    print(format_report(report))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(report, indent=2, allow_nan=False) + "\n")
        print(f"report written to {args.json}")
    return 0


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_report(report: dict) -> str:
    """The per-class table and the summary lines of an evaluation report."""
    lines = [f"{'class':<32} {'Dice %':>7} {'HD95 mm':>8} {'ASD mm':>7} {'n':>4} {'FP':>3} {'miss':>4}"]
    for name, row in report["per_class"].items():
        lines.append(
            f"{name:<32} {_num(row['dice'], '7.2f'):>7} {_num(row['hd95_mm'], '8.2f'):>8} "
            f"{_num(row['asd_mm'], '7.2f'):>7} {row['n_cases']:>4d} {row['fp_cases']:>3d} {row['missed_cases']:>4d}"
        )
    lines.append(
        f"{'mean (foreground classes)':<32} {_num(report['mean_dice'], '7.2f'):>7} "
        f"{_num(report['mean_hd95_mm'], '8.2f'):>8} {_num(report['mean_asd_mm'], '7.2f'):>7}"
    )
    tail = ", ".join(report["tail_classes"]) or "none"
    lines.append(f"tail Dice % (k={report['tail_k']}: {tail}): {_num(report['tail_dice'], '.2f')}")
    lines.append(f"{report['n_cases']} case(s); n = cases with a Dice value, FP = false-positive cases, "
                 "miss = missed cases (HD95/ASD undefined there)")
    if report.get("unmatched_predictions"):
        lines.append(f"note: {len(report['unmatched_predictions'])} prediction(s) without ground truth were skipped: "
                     + ", ".join(report["unmatched_predictions"][:5]))
    return "\n".join(lines)
