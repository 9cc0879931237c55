"""`dinomix predict`: label a CT (file or DICOM folder, or a folder of files) with a trained model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from dinomix_core.io.errors import DinomixInputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict organ labels for CT volumes",
                       description="Sliding-window prediction; the output has the input's exact geometry.")
    p.add_argument("--checkpoint", required=True, help="model.pt from `dinomix train`")
    p.add_argument("--input", required=True, help="a CT file (.nii.gz, .nrrd, .mha), a DICOM folder, or a folder of CT files")
    p.add_argument("--output", required=True, help="output label file, or a folder when --input is a folder of files")
    p.add_argument("--tta", action="store_true", help="test-time flips (in-plane), slower, slightly more accurate")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dinomix_core.engine.pipeline import LoadedModel, predict_file
    from dinomix_core.io import FILE_SUFFIXES

    model = LoadedModel(args.checkpoint, device=args.device)
    if model.teacher_note.startswith("RANDOM TEACHER"):
        print(f"note: this model was trained with a random teacher ({model.teacher_note})", file=sys.stderr)
    src, dst = Path(args.input), Path(args.output)
    if src.is_dir() and not _is_dicom_dir(src):
        files = sorted(f for f in src.iterdir() if f.is_file() and any(f.name.endswith(s) for s in FILE_SUFFIXES))
        if not files:
            raise DinomixInputError(src, "holds no CT files (.nii.gz, .nii, .nrrd, .mha, .mhd) and no DICOM series.",
                                    "point --input at a CT file or a folder of them.")
        dst.mkdir(parents=True, exist_ok=True)
        for f in tqdm(files, desc="predicting", unit="case", file=sys.stderr):
            case = _case_id(f.name)
            predict_file(model, f, dst / f"{case}.nii.gz", tta=args.tta)
        print(f"wrote {len(files)} label maps to {dst}")
        return 0
    predict_file(model, src, dst, tta=args.tta)
    print(f"wrote {dst}")
    return 0


def _case_id(name: str) -> str:
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    parts = name.rsplit("_", 1)
    return parts[0] if len(parts) == 2 and parts[1].isdigit() and len(parts[1]) == 4 else name


def _is_dicom_dir(path: Path) -> bool:
    return any(f.suffix.lower() == ".dcm" for f in path.iterdir()) or not any(
        any(f.name.endswith(s) for s in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")) for f in path.iterdir()
    )
