"""`dinomix predict`: label a CT (file or DICOM folder, or a folder of files) with a trained model.

Three kinds of ``--input``: a CT file; a DICOM folder (slices found by content, any file
names; with several series the one of ``--series-uid``, else the largest, said on stderr);
or a folder of CT files and DICOM series sub-folders, predicted one by one: a file that
cannot be read or predicted is reported and the others still are, and the run ends with a
summary and exit 2 when anything was not predicted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from dinomix_core.io.errors import DinomixInputError

_SERIES_PREFIX = "series_uid="


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict organ labels for CT volumes",
                       description="Sliding-window prediction; the output has the input's exact geometry.")
    p.add_argument("--checkpoint", required=True, help="model.pt from `dinomix train`")
    p.add_argument("--input", required=True,
                   help="a CT file (.nii.gz, .nrrd, .mha), a DICOM folder, or a folder of CT files / DICOM folders")
    p.add_argument("--output", required=True, help="output label file, or a folder when --input is a folder of files")
    p.add_argument("--series-uid", metavar="UID",
                   help="for a DICOM folder holding several series: the Series Instance UID to predict "
                        "(also written series_uid=UID; default: the largest series, reported)")
    p.add_argument("--tta", action="store_true", help="test-time flips (in-plane), slower, slightly more accurate")
    p.add_argument("--fast", action="store_true",
                   help="a quick first look: less window overlap (see benchmarks/README.md section 3 for "
                        "the time saved and the Dice cost)")
    p.add_argument("--postprocess", choices=("auto", "largest", "off"), default="auto",
                   help="mask clean-up: auto = per organ, what training measured helps (recorded in model.pt): "
                        "its largest connected piece only, or its pieces of 10%% or more of the largest; "
                        "largest = the largest piece of every organ; off = the raw network output")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dinomix_core.engine.pipeline import LoadedModel

    src, dst = Path(args.input).expanduser(), Path(args.output).expanduser()
    series_uid = _series_uid(args.series_uid)
    jobs, folder_mode = _plan(src, dst, series_uid, args.checkpoint)  # checked before the model loads
    from dinomix_core.engine.devices import resolve_device
    from dinomix_core.io.outputs import check_output_dir, check_output_file

    (check_output_dir if folder_mode else check_output_file)(dst, option="--output")
    model = LoadedModel(args.checkpoint, device=resolve_device(args.device), fast=args.fast,
                        postprocess=args.postprocess)
    if model.teacher_note.startswith("RANDOM TEACHER"):
        print(f"note: this model was trained with a random teacher ({model.teacher_note})", file=sys.stderr)
    print(model.postprocess_note(), file=sys.stderr)
    if not folder_mode:
        from dinomix_core.engine.pipeline import predict_file

        predict_file(model, jobs[0][0], dst, tta=args.tta)
        print(f"wrote {dst}")
        return 0
    return _predict_all(model, jobs, dst, tta=args.tta)


def _series_uid(value: str | None) -> str | None:
    """``--series-uid 1.2.3`` or ``--series-uid series_uid=1.2.3`` (the README's wording)."""
    if value is None:
        return None
    value = value.strip()
    if value.lower().startswith(_SERIES_PREFIX):
        value = value[len(_SERIES_PREFIX):].strip()
    if not value:
        raise DinomixInputError(None, "--series-uid is empty.", "give a Series Instance UID, e.g. --series-uid 1.2.840.113619...")
    return value


def _plan(src: Path, dst: Path, series_uid: str | None, checkpoint: str) -> tuple[list[tuple[Path, Path]], bool]:
    """``([(what to read, where to write)], folder mode)``; every refusal happens here, before slow work."""
    from dinomix_core.io.dicom import choose_series, is_dicom_file
    from dinomix_core.io.paths import files_in, refuse_output_folder_of_inputs, refuse_overwriting_inputs
    from dinomix_core.io.readers import _existing

    _existing(src)  # a missing input is named (with close names) before the model loads
    direct_dicom = src.is_dir() and any(is_dicom_file(f) for f in files_in(src))
    if series_uid is not None and not direct_dicom:
        what = "a folder of CT files" if src.is_dir() else "a single file"
        raise DinomixInputError(src, f"is {what}, and --series-uid picks one series of a DICOM folder.",
                                "drop --series-uid, or point --input at the folder holding that series' slices.")
    if src.is_file() or direct_dicom:
        target = src
        if direct_dicom:
            chosen, others = choose_series(src, series_uid)
            if others:
                if series_uid is None:
                    print(f"note: {src} holds {len(others) + 1} DICOM series; predicting the largest, {chosen.label()}; "
                          f"others: {'; '.join(s.label() for s in others)}. Choose another with --series-uid UID.",
                          file=sys.stderr)
                target = Path(chosen.files[0])  # the reader reads the whole series this slice belongs to
        refuse_overwriting_inputs([dst], [src, *files_in(src), checkpoint],
                                  fix="pass an --output file name that is not the CT's (e.g. case_pred.nii.gz).")
        return [(target, dst)], False
    inputs = _folder_inputs(src)
    refuse_output_folder_of_inputs(dst, src, fix="pass an --output folder apart from the CT folder.")
    from dinomix_core.project.scan import case_id_from_path

    outputs = [dst / f"{case_id_from_path(f)}.nii.gz" for f in inputs]
    refuse_overwriting_inputs(outputs, [*inputs, *(f for i in inputs if i.is_dir() for f in files_in(i)), checkpoint],
                              fix="pass an --output folder apart from the CTs.")
    return list(zip(inputs, outputs)), True


def _folder_inputs(src: Path) -> list[Path]:
    """CT files directly in ``src`` and its sub-folders that directly hold DICOM slices; an error naming
    the folder and what was looked for when there is none."""
    from dinomix_core.io import FILE_SUFFIXES
    from dinomix_core.io.dicom import find_series_folders, is_dicom_file
    from dinomix_core.io.paths import files_in

    files = sorted(f for f in files_in(src) if not f.name.startswith(".") and any(f.name.endswith(s) for s in FILE_SUFFIXES))
    subfolders = sorted(d for d in src.iterdir() if d.is_dir() and not d.name.startswith("."))
    series = [d for d in subfolders if any(is_dicom_file(f) for f in files_in(d))]
    if files or series:
        return files + series
    deeper = find_series_folders(src, max_depth=4)
    hint = (f" DICOM series lie deeper, e.g. {', '.join(str(d.relative_to(src)) for d in deeper[:3])}: "
            "point --input at one of those folders (or their parent)." if deeper else "")
    raise DinomixInputError(src, f"holds no CT files ({', '.join(FILE_SUFFIXES)}), no DICOM slices (looked for by "
                            "content, any file names) and no sub-folder holding a DICOM series." + hint,
                            "point --input at a CT file, a DICOM folder or a folder of them.")


def _predict_all(model, jobs: list[tuple[Path, Path]], dst: Path, *, tta: bool) -> int:
    """Predict every input; one that fails is reported and skipped. Exit 2 when any failed."""
    from dinomix_core.engine.pipeline import predict_file
    from dinomix_core.io.atomic import DiskFullError

    dst.mkdir(parents=True, exist_ok=True)
    done: list[tuple[Path, Path]] = []
    failed: list[tuple[Path, str]] = []
    for src, out in tqdm(jobs, desc="predicting", unit="case", file=sys.stderr):
        try:
            predict_file(model, src, out, tta=tta)
        except DiskFullError:
            raise  # every later write would fail the same way: stop with the one line
        except DinomixInputError as exc:
            failed.append((src, exc.problem + (f" Fix: {exc.fix}" if exc.fix else "")))
        except (RuntimeError, ValueError) as exc:  # the network or a reader choked on this input only
            failed.append((src, f"could not be predicted ({type(exc).__name__}: {exc})."))
        else:
            done.append((src, out))
    for src, out in done:
        print(f"predicted      {src.name} -> {out}")
    for src, why in failed:
        print(f"not predicted  {src}: {why}", file=sys.stderr)
    print(f"wrote {len(done)} label maps to {dst}" + (f"; {len(failed)} of {len(jobs)} inputs not predicted" if failed else ""))
    if failed:
        print(f"error: {len(failed)} of {len(jobs)} inputs in the folder were not predicted (listed above); "
              "fix or remove them and predict those again.", file=sys.stderr)
        return 2
    return 0
