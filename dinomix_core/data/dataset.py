"""Training cases: an nnU-Net data set on disk, the labeled/unlabeled split, and loading.

Reads the layout users already have (``imagesTr/<case>_0000.nii.gz``,
``labelsTr/<case>.nii.gz``, ``dataset.json``) and the split files of the SSL benchmarks
(one case id per line, as in DHC's ``labeled_5p.txt``). Loading turns each case into the
arrays training needs: the student image, the label, and the cached teacher tokens.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from dinomix_core.data.geometry import canonical_spacing, median_spacing, network_grid
from dinomix_core.data.preprocess import DEFAULT_STRIDE, STUDENT_CLIP_HU, TEACHER_WINDOW, student_intensity
from dinomix_core.data.token_cache import TokenCache, compute_tokens
from dinomix_core.engine.events import check_cancel
from dinomix_core.io import LabelMap, Volume, load_dataset_json, read_labels, read_volume
from dinomix_core.io.errors import DinomixInputError
from dinomix_core.io.header import read_geometry

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class CaseSpec:
    """Where one case lives on disk; ``label_path`` is None for an unlabeled case."""

    case_id: str
    image_path: Path
    label_path: Path | None = None


@dataclass
class LoadedCase:
    """One case in memory, all arrays indexed (z, y, x).

    ``image``: float32 student intensity in [0, 1]; ``label``: uint8 class values (uint16 for
    more than 256 classes) or None; ``tokens``: float16 (z, C, h, w) teacher tokens or None;
    ``spacing_zyx`` in mm; ``volume``: the image geometry (its array is ``image``, not a copy).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    tokens: np.ndarray | None
    spacing_zyx: tuple[float, float, float]
    volume: Volume


def load_nnunet_dataset(
    directory: str | Path, *, allow_unlabeled: bool = False
) -> tuple[list[CaseSpec], LabelMap, dict]:
    """Cases of an nnU-Net v2 data set folder, sorted by case id, with its label map and dataset.json.

    Every ``imagesTr`` image needs its ``labelsTr`` label and vice versa; with
    ``allow_unlabeled`` an image without a label becomes an unlabeled case instead of an error.
    Only single-channel (CT) data sets are supported.
    """
    root = Path(directory)
    if not root.is_dir():
        raise DinomixInputError(root, "is not a folder.", "Point to an nnU-Net data set folder holding dataset.json, imagesTr/ and labelsTr/.")
    json_path = root / "dataset.json"
    if not json_path.is_file():
        raise DinomixInputError(
            json_path, "is missing, so the class names are unknown.",
            'Add a dataset.json with "labels", e.g. {"labels": {"background": 0, "spleen": 1}, "file_ending": ".nii.gz"}.',
        )
    meta = load_dataset_json(json_path)
    labelmap = LabelMap.from_dataset_json(json_path)
    channels = meta.get("channel_names") or meta.get("modality") or {"0": "CT"}
    if len(channels) != 1:
        raise DinomixInputError(
            json_path, f"declares {len(channels)} input channels ({', '.join(map(str, channels.values()))}); only single-channel CT is supported.",
            'Keep one channel: "channel_names": {"0": "CT"}.',
        )
    ending = str(meta.get("file_ending", ".nii.gz"))
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise DinomixInputError(images_dir, "is missing.", f"Put the training images there as <case>_0000{ending}.")

    images: dict[str, Path] = {}
    for path in _files(images_dir, ending):
        match = _CHANNEL.match(path.name[: -len(ending)])
        if match is None:
            raise DinomixInputError(path, "lacks the nnU-Net channel suffix.", f"Rename it to <case>_0000{ending}.")
        if match["channel"] != "0000":
            raise DinomixInputError(path, f"is input channel {match['channel']}; only single-channel CT is supported.", "Remove the extra channels.")
        images[match["case"]] = path
    if not images:
        raise DinomixInputError(images_dir, f"holds no images ending in {ending}.", f"Put the training images there as <case>_0000{ending}, or fix file_ending in dataset.json.")

    labels: dict[str, Path] = {}
    if labels_dir.is_dir():
        labels = {path.name[: -len(ending)]: path for path in _files(labels_dir, ending)}
    elif not allow_unlabeled:
        raise DinomixInputError(labels_dir, "is missing.", f"Put a label map <case>{ending} for every image there.")

    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise DinomixInputError(
            labels[orphans[0]], f"has no image (expected {images_dir / (orphans[0] + '_0000' + ending)})"
            + (f"; {len(orphans) - 1} more labels lack images" if len(orphans) > 1 else "") + ".",
            "Add the image or remove the label.",
        )
    unlabeled = sorted(set(images) - set(labels))
    if unlabeled and not allow_unlabeled:
        raise DinomixInputError(
            images[unlabeled[0]], f"has no label (expected {labels_dir / (unlabeled[0] + ending)})"
            + (f"; {len(unlabeled) - 1} more images lack labels" if len(unlabeled) > 1 else "") + ".",
            "Add the label, or load the folder with unlabeled images allowed.",
        )

    cases = [CaseSpec(case, images[case], labels.get(case)) for case in sorted(images)]
    declared = meta.get("numTraining")
    if isinstance(declared, int) and declared != len(cases):
        warnings.warn(f"{json_path}: numTraining is {declared} but {len(cases)} cases were found", stacklevel=2)
    return cases, labelmap, meta


def _spilled(folder: Path, name: str, array: np.ndarray) -> np.ndarray:
    """``array`` written to ``folder/name.npy`` and memory-mapped back (see ``load_cases``)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.npy"
    np.save(path, np.ascontiguousarray(array), allow_pickle=False)
    return np.load(path, mmap_mode="c", allow_pickle=False)


SPILL_GROUPS = ("labeled", "unlabeled", "validation")  # sub-folders of a run's spilled cases


def spill_folder(run_dir: str | Path) -> Path:
    """Where this process spills a run's cases: ``run_dir/.cases-PID``.

    Folders left by a process that no longer runs (killed with SIGKILL, out of memory) are
    removed first, so a crashed run does not leave gigabytes behind.
    """
    run_dir = Path(run_dir)
    for old in run_dir.glob(".cases-*"):
        pid = old.name.rpartition("-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            remove_spilled(old)
    return run_dir / f".cases-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_spilled(spill_dir: str | Path | None) -> None:
    """Delete a ``spill_dir`` of :func:`load_cases` (safe while maps are open: Linux keeps the
    pages until they are dropped; elsewhere a file still mapped is left for the next run)."""
    if spill_dir is None:
        return
    folder = Path(spill_dir)
    for group in SPILL_GROUPS:
        if (folder / group).is_dir():
            remove_spilled(folder / group)
    for path in folder.glob("*.npy"):
        try:
            path.unlink()
        except OSError:
            pass
    try:
        folder.rmdir()
    except OSError:
        pass


def _files(folder: Path, ending: str) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(ending) and not p.name.startswith(".") and p.is_file())


def select_labeled(
    cases: Sequence[CaseSpec], spec: int | str | Path | Iterable[str]
) -> tuple[list[CaseSpec], list[CaseSpec]]:
    """Split ``cases`` into (labeled, unlabeled), both sorted by case id.

    ``spec`` is an int N (the first N cases in case-id order; a string of digits counts as
    N), a comma-separated list of case ids, a path to a text file with one id per line (DHC /
    GenericSSL split files; blank lines and ``#`` comments skipped), or a list of ids. An id
    matches a case exactly, or as its numeric tail (``0002`` matches ``img0002``) when that is
    unambiguous. Unlabeled cases are returned with ``label_path=None`` so their labels cannot
    leak into training.
    """
    ordered = sorted(cases, key=lambda c: c.case_id)
    source: Path | None = None
    if isinstance(spec, bool):
        raise TypeError("labeled-case spec must be a count, ids or a split file, not a bool")
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit() and not Path(spec).is_file()):
        count = int(spec)
        if not 0 <= count <= len(ordered):
            raise DinomixInputError(None, f"asked for {count} labeled cases but the data set has {len(ordered)}.", f"Choose 0..{len(ordered)}.")
        chosen = [c.case_id for c in ordered[:count]]
    else:
        if isinstance(spec, Path) or (isinstance(spec, str) and Path(spec).is_file()):
            source = Path(spec)
            ids = _read_split_file(source)
        elif isinstance(spec, str):
            ids = [part.strip() for part in spec.split(",") if part.strip()]
        else:
            ids = [str(part).strip() for part in spec]
        chosen = _resolve_ids(ids, [c.case_id for c in ordered], source)
    picked = set(chosen)
    labeled = [c for c in ordered if c.case_id in picked]
    missing_label = [c.case_id for c in labeled if c.label_path is None]
    if missing_label:
        raise DinomixInputError(source, f"selects cases without a label: {', '.join(missing_label)}.", "Label them first or choose other cases.")
    unlabeled = [replace(c, label_path=None) for c in ordered if c.case_id not in picked]
    return labeled, unlabeled


def _read_split_file(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DinomixInputError(path, f"cannot be read as a text split file ({exc}).", "Give a text file with one case id per line.") from exc
    ids = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    ids = [i for i in ids if i]
    if not ids:
        raise DinomixInputError(path, "lists no case ids.", "Write one case id per line.")
    return ids


def _resolve_ids(ids: Sequence[str], case_ids: Sequence[str], source: Path | None) -> list[str]:
    known = set(case_ids)
    resolved: list[str] = []
    unknown: list[str] = []
    for wanted in ids:
        if wanted in known:
            match = wanted
        else:
            tail = [c for c in case_ids if c.endswith(wanted) and not c[: -len(wanted)][-1:].isdigit()] if wanted.isdigit() else []
            if len(tail) > 1:
                raise DinomixInputError(source, f"Case id {wanted!r} matches several cases ({', '.join(tail)}).", "Use the full case id.")
            if not tail:
                unknown.append(wanted)
                continue
            match = tail[0]
        if match not in resolved:
            resolved.append(match)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        examples = ", ".join(case_ids[:3])
        subject = "names" if source is not None else "The labeled-case list names"
        raise DinomixInputError(
            source, f"{subject} case ids that are not in the data set: {shown}.",
            f"Use ids of this data set (e.g. {examples}).",
        )
    return resolved


def median_case_spacing(specs: Sequence[CaseSpec]) -> tuple[float, float, float] | None:
    """Per-axis median spacing (z, y, x mm, in LPS array order) of the cases' images; None without cases.

    Read from the file headers (a DICOM series is read whole), so the target spacing is known
    before any case is loaded.
    """
    if not specs:
        return None
    spacings = []
    for spec in specs:
        geometry = read_geometry(spec.image_path)
        spacings.append(canonical_spacing(geometry["spacing_zyx"], geometry["direction"]))
    return median_spacing(spacings)


def resolve_target_spacing(requested: Sequence[float] | None, labeled: Sequence[CaseSpec]) -> tuple[float, float, float] | None:
    """The target spacing of a run: ``requested`` (z, y, x mm), else the labeled cases' median."""
    if requested is not None:
        return tuple(float(v) for v in requested)
    return median_case_spacing(labeled)


def load_cases(
    specs: Sequence[CaseSpec],
    *,
    labelmap: LabelMap | None = None,
    teacher=None,
    cache: TokenCache | None = None,
    window: tuple[float, float] = TEACHER_WINDOW,
    stride: int = DEFAULT_STRIDE,
    clip: tuple[float, float] = STUDENT_CLIP_HU,
    target_spacing: Sequence[float] | None = None,
    reorient: bool = True,
    interpolation: str = "linear",
    progress: Callable[[int, int, str], None] | None = None,
    token_progress: Callable[[str, int, int], None] | None = None,
    start_progress: Callable[[int, int, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    spill_dir: str | Path | None = None,
) -> list[LoadedCase]:
    """Read cases through ``dinomix_core.io`` and prepare them for training.

    Every case is brought to the network's grid (:mod:`dinomix_core.data.geometry`): LPS
    array order (``reorient``) and ``target_spacing`` (z, y, x mm; None keeps each case's
    own), the image resampled with ``interpolation`` ("linear" or "bspline"), the label by
    nearest neighbour; teacher tokens are computed on that grid. ``spacing_zyx`` and
    ``volume`` of each :class:`LoadedCase` describe the network's grid, not the file's.
    Labels are checked against their image's grid and ``labelmap`` by ``read_labels``. With a
    ``teacher``, tokens come from ``cache`` (or are computed without caching when it is None)
    using the teacher ``window`` (width, level HU) and token ``stride``. ``start_progress``
    gets (cases done, total, case id) before a case is read, ``progress`` the same after it;
    ``token_progress`` gets (case id, slices done, total) before the first teacher batch and
    after each (with all slices done at once when the tokens were cached). ``cancel()`` is
    checked before every case, before its tokens and before every teacher batch: True raises
    :class:`~dinomix_core.engine.events.Cancelled`.

    ``spill_dir``: write each prepared image and label there as ``.npy`` and keep only a
    memory map of it (copy-on-write, so arrays stay writable in memory and the files are
    never changed), so a project of many full-size CTs costs page cache, which the kernel can
    reclaim, rather than process memory: only the case being read is ever wholly in RAM. The
    caller removes the folder once training is over (:func:`remove_spilled`).
    """
    loaded: list[LoadedCase] = []
    spill = None if spill_dir is None else Path(spill_dir)
    for number, spec in enumerate(specs, start=1):
        check_cancel(cancel, f"loading cases ({number - 1} of {len(specs)} read)")
        if start_progress is not None:
            start_progress(number - 1, len(specs), spec.case_id)
        volume = read_volume(spec.image_path)
        label = None
        if spec.label_path is not None:
            # io checks the grid against the image and the values against the label map,
            # and returns uint8 (uint16 above 255 classes).
            label = read_labels(spec.label_path, reference=volume, labelmap=labelmap).array
        grid = network_grid(volume, target_spacing, reorient=reorient, interpolation=interpolation)
        if label is not None:
            label = grid.labels_to_network(label)
        volume = grid.network
        del grid
        hu = volume.array
        tokens = None
        if teacher is not None:
            check_cancel(cancel, f"loading case {spec.case_id}")
            report = None
            if token_progress is not None:
                seen = [0]

                def report(done, total, cid=spec.case_id, seen=seen):
                    seen[0] = done
                    token_progress(cid, done, total)

                report(0, hu.shape[0])  # before the first batch: "this case's tokens are next"
            if cache is not None:
                tokens = cache.get(hu, teacher, window=window, stride=stride, progress=report, cancel=cancel)
            else:
                tokens = compute_tokens(hu, teacher, window=window, stride=stride, progress=report, cancel=cancel)
            if report is not None and seen[0] != hu.shape[0]:  # found in the cache: report it done
                report(hu.shape[0], hu.shape[0])
        image = student_intensity(hu, clip)
        if spill is not None:
            image = _spilled(spill, f"{number:05d}-image", image)
            label = None if label is None else _spilled(spill, f"{number:05d}-label", label)
        loaded.append(
            LoadedCase(
                case_id=spec.case_id,
                image=image,
                label=label,
                tokens=tokens,
                spacing_zyx=tuple(volume.spacing_zyx),
                volume=volume.with_array(image),
            )
        )
        if progress is not None:
            progress(number, len(specs), spec.case_id)
    return loaded

