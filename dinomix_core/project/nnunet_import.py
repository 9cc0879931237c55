"""Bring an nnU-Net data set (imagesTr/, labelsTr/, dataset.json) into a project.

Images become cases named by their nnU-Net identifier; labelsTr files become final human
revisions; dataset.json supplies the class map. Running it twice adds nothing new: images are
matched by content hash and labels by their voxels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from dinomix_core.io import LabelMap, load_dataset_json
from dinomix_core.io.errors import DinomixInputError
from dinomix_core.project.errors import ClassMapError
from dinomix_core.project.revisions import default_author


@dataclass
class ImportReport:
    added: list[str] = field(default_factory=list)  # new cases
    labeled: list[tuple[str, int]] = field(default_factory=list)  # (case, new revision id)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "_")


def adopt_label_map(project, label_map: LabelMap, source) -> None:
    """Use ``label_map`` when the project has none; accept an identical or extending one; else refuse."""
    current = project.label_map
    if current is None:
        project.set_label_map(label_map)
        return
    ours = [_norm(n) for n in current.names]
    theirs = [_norm(n) for n in label_map.names]
    if theirs == ours:
        return
    if theirs[: len(ours)] == ours:  # appends classes: existing labels keep their meaning
        project.set_label_map(label_map)
        return
    raise ClassMapError(source, f"its classes {label_map.names} differ from the project's {current.names}.",
                        f"Import into a project with the same classes, or change the project's with "
                        f"`dinomix project classes {project.root} --labels {source}` (only before labels exist).")


def import_nnunet(project, dataset_dir: str | os.PathLike, *, copy: bool = False, author: str | None = None) -> ImportReport:
    """Add ``imagesTr/<case>_0000<ending>`` as cases and ``labelsTr/<case><ending>`` as final labels."""
    root = Path(dataset_dir).expanduser().resolve()
    data = load_dataset_json(root)
    adopt_label_map(project, LabelMap.from_dataset_json(data), root / "dataset.json")
    ending = str(data.get("file_ending", ".nii.gz"))
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise DinomixInputError(root, "has no imagesTr/ folder.", "Point to the nnU-Net data set folder (e.g. Dataset001_Abdomen).")
    author = author or default_author()
    report = ImportReport()
    seen: set[str] = set()
    for image in sorted(images_dir.iterdir()):
        name = image.name
        if name.startswith(".") or not name.endswith(ending):
            continue
        stem = name[: -len(ending)]
        if not stem.endswith("_0000"):
            if len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit():
                report.skipped.append((image, "extra input channel; projects hold one image (channel 0000) per case"))
            else:
                report.skipped.append((image, f"not named <case>_0000{ending}"))
            continue
        nn_case = stem[: -len("_0000")]
        seen.add(nn_case)
        try:
            case_id, added, reason = project.add_image(image, copy=copy, case_id=nn_case)
        except DinomixInputError as exc:
            report.skipped.append((image, exc.problem))
            continue
        if added:
            report.added.append(case_id)
        elif project.case(case_id, include_removed=True).removed:
            report.skipped.append((image, reason))
            continue
        label = labels_dir / f"{nn_case}{ending}"
        if not label.is_file():
            continue  # an image without a label is an unlabeled case: fine for semi-supervised training
        try:
            before = project.label_revision(case_id)
            rev = project.save_labels(case_id, label, author=author, final=True,
                                      note=f"imported from {label}", unless_identical=True)
        except DinomixInputError as exc:
            report.skipped.append((label, exc.problem + (f" Fix: {exc.fix}" if exc.fix else "")))
            continue
        if before is None or rev.id != before.id:
            report.labeled.append((case_id, rev.id))
        else:
            report.skipped.append((label, f"identical to revision {rev.id} of case {case_id!r}"))
    if labels_dir.is_dir():
        for label in sorted(labels_dir.iterdir()):
            if label.name.endswith(ending) and label.name[: -len(ending)] not in seen:
                report.skipped.append((label, f"no image imagesTr/{label.name[: -len(ending)]}_0000{ending}"))
    return report
