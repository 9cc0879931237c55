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
    from dinomix_core.project.scan import case_id_from_path, is_dicom_file

    model = LoadedModel(args.checkpoint, device=args.device)
    if model.teacher_note.startswith("RANDOM TEACHER"):
        print(f"note: this model was trained with a random teacher ({model.teacher_note})", file=sys.stderr)
    src, dst = Path(args.input), Path(args.output)
    if src.is_dir() and not any(is_dicom_file(f) for f in src.iterdir() if f.is_file()):
        files = sorted(f for f in src.iterdir() if f.is_file() and any(f.name.endswith(s) for s in FILE_SUFFIXES))
        if not files:
            raise DinomixInputError(src, "holds no CT files (.nii.gz, .nii, .nrrd, .mha, .mhd) and no DICOM series.",
                                    "point --input at a CT file or a folder of them.")
        dst.mkdir(parents=True, exist_ok=True)
        for f in tqdm(files, desc="predicting", unit="case", file=sys.stderr):
            predict_file(model, f, dst / f"{case_id_from_path(f)}.nii.gz", tta=args.tta)
        print(f"wrote {len(files)} label maps to {dst}")
        return 0
    predict_file(model, src, dst, tta=args.tta)
    print(f"wrote {dst}")
    return 0
