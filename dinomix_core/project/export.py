"""Hand the final human labels to other tools: an nnU-Net data set, or 3D Slicer segmentations.

Only labeled cases (newest final human revision) are exported, after the same checks as
training: a case whose image changed since it was added is refused, not exported.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from dinomix_core.io import read_labels, read_volume, write_dataset_json, write_image, write_labels
from dinomix_core.io.atomic import atomic_path
from dinomix_core.io.paths import refuse_overwriting_inputs
from dinomix_core.project.errors import ProjectError


@dataclass
class ExportReport:
    out: Path
    cases: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def _prepare_out(project, out: str | os.PathLike, clashes: list[str], overwrite: bool) -> Path:
    """The resolved output folder (created); refuse the project itself and earlier exports."""
    out = Path(out).expanduser().resolve()
    if project.is_inside(out):
        raise ProjectError(out, "is inside the project folder.", "Export to a folder outside the project.")
    found = [name for name in clashes if (out / name).exists()]
    if found and not overwrite:
        raise ProjectError(out, f"already holds an export ({', '.join(found[:3])}).",
                           "Choose an empty folder, or pass --overwrite.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _labeled(project):
    labeled, _ = project.training_split(strict=True)
    if not labeled:
        raise ProjectError(project.root, "has no labeled case (final human revision) to export.",
                           f"Import or save labels first: `dinomix project label {project.root} CASE LABELFILE`.")
    return labeled


def export_nnunet(project, out: str | os.PathLike, *, overwrite: bool = False) -> ExportReport:
    """Write ``out/imagesTr/<case>_0000.nii.gz``, ``out/labelsTr/<case>.nii.gz``, ``out/dataset.json``."""
    label_map = project.require_label_map()
    labeled = _labeled(project)
    out = _prepare_out(project, out, ["dataset.json"], overwrite)
    _refuse_inputs(labeled, [p for item in labeled for p in (out / "imagesTr" / f"{item.case_id}_0000.nii.gz",
                                                             out / "labelsTr" / f"{item.case_id}.nii.gz")])
    report = ExportReport(out)
    modality = "CT"
    for item in labeled:
        case = project.case(item.case_id)
        modality = case.modality or modality
        image_out = out / "imagesTr" / f"{case.id}_0000.nii.gz"
        label_out = out / "labelsTr" / f"{case.id}.nii.gz"
        if item.image_path.is_file() and item.image_path.name.lower().endswith(".nii.gz"):
            _copy_file(item.image_path, image_out)  # already the right format: keep it bit for bit
        else:
            image_out.parent.mkdir(parents=True, exist_ok=True)
            write_image(read_volume(item.image_path), image_out)
        _copy_file(item.label_path, label_out)  # revisions are stored as .nii.gz already
        report.cases.append(case.id)
        report.files += [image_out, label_out]
    data = label_map.to_dataset_json_dict(num_training=len(report.cases), channel_names={"0": modality},
                                          file_ending=".nii.gz", name=label_map.title or project.root.name)
    report.files.append(write_dataset_json(out / "dataset.json", data))
    return report


def export_slicer(project, out: str | os.PathLike, *, images: bool = False, overwrite: bool = False) -> ExportReport:
    """Write ``out/<case>.seg.nrrd`` (labelmap with Slicer segment names, colours, values) per
    labeled case; with ``images`` also ``out/<case>.nrrd``. Each header is read back and checked."""
    label_map = project.require_label_map()
    labeled = _labeled(project)
    out = _prepare_out(project, out, [f"{item.case_id}.seg.nrrd" for item in labeled], overwrite)
    _refuse_inputs(labeled, [out / f"{item.case_id}{ext}" for item in labeled
                             for ext in ((".seg.nrrd", ".nrrd") if images else (".seg.nrrd",))])
    report = ExportReport(out)
    for item in labeled:
        seg = out / f"{item.case_id}.seg.nrrd"
        write_labels(read_labels(item.label_path), seg, labelmap=label_map)
        back = read_labels(seg).meta.get("labelmap")
        if back is None or back.names[1:] != label_map.names[1:]:
            raise ProjectError(seg, "was written without the expected Slicer segment header.",
                               "Report this bug; meanwhile export with --format nnunet.")
        report.files.append(seg)
        if images:
            image_out = out / f"{item.case_id}.nrrd"
            write_image(read_volume(item.image_path), image_out)
            report.files.append(image_out)
        report.cases.append(item.case_id)
    return report


def _refuse_inputs(labeled, outputs: list[Path]) -> None:
    """An export never writes over a case's own image or label file (e.g. re-exporting into
    the nnU-Net folder the images are referenced from)."""
    inputs = [p for item in labeled for p in (item.image_path, item.label_path)]
    refuse_overwriting_inputs(outputs, inputs, fix="Export to a new, empty folder.")


def _copy_file(src: Path, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
