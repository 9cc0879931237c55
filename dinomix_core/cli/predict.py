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
    from dinomix_core.io.paths import files_in, refuse_output_folder_of_inputs, refuse_overwriting_inputs
    from dinomix_core.project.scan import case_id_from_path, is_dicom_file

    src, dst = Path(args.input), Path(args.output)
    folder_mode = src.is_dir() and not any(is_dicom_file(f) for f in src.iterdir() if f.is_file())
    # Checked before the model loads: nothing slow happens before a refusal.
    if folder_mode:
        files = sorted(f for f in src.iterdir() if f.is_file() and any(f.name.endswith(s) for s in FILE_SUFFIXES))
        if not files:
            raise DinomixInputError(src, "holds no CT files (.nii.gz, .nii, .nrrd, .mha, .mhd) and no DICOM series.",
                                    "point --input at a CT file or a folder of them.")
        refuse_output_folder_of_inputs(dst, src, fix="pass an --output folder apart from the CT folder.")
        outputs = [dst / f"{case_id_from_path(f)}.nii.gz" for f in files]
        refuse_overwriting_inputs(outputs, [*files, args.checkpoint], fix="pass an --output folder apart from the CTs.")
    else:
        inputs = [src, *files_in(src)] if src.is_dir() else [src]
        refuse_overwriting_inputs([dst], [*inputs, args.checkpoint],
                                  fix="pass an --output file name that is not the CT's (e.g. case_pred.nii.gz).")
    model = LoadedModel(args.checkpoint, device=args.device)
    if model.teacher_note.startswith("RANDOM TEACHER"):
        print(f"note: this model was trained with a random teacher ({model.teacher_note})", file=sys.stderr)
    if folder_mode:
        dst.mkdir(parents=True, exist_ok=True)
        for f, out in tqdm(list(zip(files, outputs)), desc="predicting", unit="case", file=sys.stderr):
            predict_file(model, f, out, tta=args.tta)
        print(f"wrote {len(files)} label maps to {dst}")
        return 0
    predict_file(model, src, dst, tta=args.tta)
    print(f"wrote {dst}")
    return 0
