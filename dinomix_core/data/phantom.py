"""Procedural abdominal CT phantom with the BTCV-13 organs: the default data set.

Why it exists: the app and the engine need a data set that ships with the code, is free of
licences, and shows the problem DINO-Mix targets, the extreme class imbalance of abdominal
CT (background > 90 % of voxels, liver a few %, adrenal glands about 0.01-0.05 %), with
organs whose intensities overlap so that intensity alone cannot segment them.

Conventions
-----------
* Arrays are indexed (z, y, x); spacing is in mm in the same order.
* World frame: DICOM/ITK LPS with the identity direction. Array index x grows towards the
  patient's **left**, y towards **posterior**, z towards **superior** (head). Shown the usual
  way (rows = y downwards, columns = x rightwards) this is the radiological view: anterior at
  the top and the patient's right (liver, gallbladder, IVC) on the image's left, i.e. at low
  x indices; spleen, stomach and aorta sit at higher x indices.
* The volume is centred on world (0, 0, 0) mm.
* Sizes (field of view 240 mm cranio-caudal x 384 mm x 384 mm axial, like an abdominal CT
  reconstructed on a 38 cm display field):

  - ``small``: 48 x 96 x 96 voxels, spacing (5.0, 4.0, 4.0) mm: thick-slice CT, fast.
  - ``medium``: 96 x 192 x 192 voxels, spacing (2.5, 2.0, 2.0) mm: the same anatomy, finer.

Determinism: a case is a pure function of (seed, index, size). The anatomy, its smooth
deformation and its intensity textures come from random streams whose draws do not depend
on the size, so ``small`` and ``medium`` of one case show the same patient; only the image
noise differs.

Anatomy (per-case variation in size, position, rotation, a random smooth deformation field
applied to every structure, body habitus, fat thickness, gas, contrast phase): body outline
with subcutaneous fat and a muscle wall, air outside (-1000 HU), spine with discs, canal and
posterior elements, ribs, paraspinal and psoas muscles, small bowel, colon and duodenum
(unlabelled context), and the 13 labelled organs. Intensities are realistic and overlap
(liver ~55, spleen ~48, kidney ~35, pancreas ~40, adrenal ~28, vessels ~42, muscle ~48 HU
non-contrast; 60 % of cases get a portal-venous contrast phase of random strength). The
image gets a slight Gaussian blur (partial volume, sigma 0.7 voxel) and Gaussian noise of
10-20 HU; labels are exact. Structures are painted in priority order (small organs and
vessels last); bone is painted after the organs and is never labelled.

Imbalance (small size, mean over 30 cases): background ~94 %, liver ~3.4 %, stomach ~0.8 %,
spleen/kidneys 0.3-0.45 %, pancreas ~0.1 %, esophagus ~0.03 %, adrenal glands ~0.02 %
each, close to the real TotalSegmentator case (liver 3.0 %, right adrenal 0.012 %).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

from dinomix_core.data import _phantom_shapes as shp
from dinomix_core.data._phantom_anatomy import (  # noqa: F401  (label values are public)
    AORTA, ESOPHAGUS, GALLBLADDER, IVC, L_ADRENAL, L_KIDNEY, LIVER, NUM_CLASSES, PANCREAS, PORTAL_SPLENIC,
    R_ADRENAL, R_KIDNEY, SPLEEN, STOMACH, _Canvas, _Intensities, _render,
)
from dinomix_core.io import DinomixInputError, LabelMap, Volume, write_dataset_json, write_image, write_labels

GENERATOR_VERSION = 1
CASE_PREFIX = "phantom"


@dataclass(frozen=True)
class PhantomSize:
    """Grid of one phantom size: shape and spacing are (z, y, x), spacing in mm."""

    shape_zyx: tuple[int, int, int]
    spacing_zyx: tuple[float, float, float]

    @property
    def half_extent_mm(self) -> tuple[float, float, float]:
        return tuple(n * s / 2.0 for n, s in zip(self.shape_zyx, self.spacing_zyx))


PHANTOM_SIZES: dict[str, PhantomSize] = {
    "small": PhantomSize((48, 96, 96), (5.0, 4.0, 4.0)),
    "medium": PhantomSize((96, 192, 192), (2.5, 2.0, 2.0)),
}

def phantom_labelmap() -> LabelMap:
    """The BTCV-13 class map the phantom is labelled with (background + 13 organs)."""
    return LabelMap.preset("btcv13")


def case_id(index: int) -> str:
    return f"{CASE_PREFIX}_{index:03d}"


def generate_case(index: int, seed: int, size: str = "small") -> tuple[Volume, Volume]:
    """Generate phantom case ``index`` of the data set ``seed``.

    Returns ``(image, labels)``: an int16 HU volume and a uint8 BTCV-13 label volume on the
    same (z, y, x) grid (spacing in mm, LPS identity direction, centred on the origin).
    """
    if size not in PHANTOM_SIZES:
        raise DinomixInputError(None, f"unknown phantom size {size!r}.", f"use one of {sorted(PHANTOM_SIZES)}.")
    if index < 0 or seed < 0:
        raise DinomixInputError(None, f"case index and seed must be >= 0 (got {index}, {seed}).")
    grid = PHANTOM_SIZES[size]
    seq = np.random.SeedSequence([int(seed), int(index), GENERATOR_VERSION])
    rng_anat, rng_tex, rng_noise = (np.random.default_rng(s) for s in seq.spawn(3))

    canvas = _Canvas(grid, rng_anat)
    hu = _Intensities(rng_anat)
    tex = shp.smooth_field(rng_tex, canvas.axes_mm, grid.half_extent_mm, 10.0, count=2)
    _render(canvas, hu, tex, rng_anat)

    image = ndimage.gaussian_filter(canvas.image, sigma=0.7, mode="nearest")
    noise_sd = float(rng_anat.uniform(10.0, 20.0))
    image += noise_sd * rng_noise.standard_normal(image.shape, dtype=np.float32)
    image = np.clip(np.rint(image), -1024, 3071).astype(np.int16)

    origin = canvas.origin_xyz
    meta = {"phantom": {"seed": int(seed), "index": int(index), "size": size, "version": GENERATOR_VERSION}}
    image_vol = Volume(image, spacing_zyx=grid.spacing_zyx, origin_xyz=origin, modality="CT", meta=meta)
    label_vol = Volume(canvas.labels, spacing_zyx=grid.spacing_zyx, origin_xyz=origin, modality="SEG", meta=dict(meta))
    return image_vol, label_vol


def write_phantom_dataset(
    out_dir: str | Path,
    cases: int,
    seed: int,
    size: str = "small",
    progress: Callable[[int, int, str], None] | None = None,
    *,
    overwrite: bool = False,
) -> dict:
    """Write ``cases`` phantom cases as an nnU-Net data set under ``out_dir``.

    Layout: ``imagesTr/phantom_000_0000.nii.gz``, ``labelsTr/phantom_000.nii.gz``,
    ``dataset.json`` (BTCV-13 labels, channel ``{"0": "CT"}``). The data set is built in a
    hidden sibling folder and swapped in at the end, so a run that is killed or hits a full
    disk leaves ``out_dir`` wholly old (or absent), never a mix of two seeds. An existing
    data set is only replaced with ``overwrite=True`` so a typo in ``out_dir`` never clobbers
    real data; files in ``out_dir`` that are not phantom cases are kept. ``progress(done,
    total, case_id)`` is called after each case. Returns statistics: per-class voxel counts
    and fractions over all cases, the seconds spent per case, and the case ids.
    """
    out = Path(out_dir).expanduser()
    if cases < 1:
        raise DinomixInputError(None, f"--cases must be at least 1 (got {cases}).")
    if out.is_symlink():
        out = out.resolve()
    _finish_interrupted_swaps(out)
    if out.exists() and not out.is_dir():
        raise DinomixInputError(out, "exists and is not a folder.", "choose a new output folder.")
    if not overwrite and out.is_dir() and _holds_dataset(out):
        raise DinomixInputError(
            out, "already holds a data set (dataset.json, imagesTr or labelsTr).", "choose an empty folder or pass --force."
        )
    labelmap = phantom_labelmap()
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    ids: list[str] = []
    start = time.perf_counter()
    gen_seconds = 0.0
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}{_SIBLING_TAG}", dir=out.parent))
    try:
        (staging / _STAGING_MARK).touch()
        for i in range(cases):
            t0 = time.perf_counter()
            image, labels = generate_case(i, seed, size)
            gen_seconds += time.perf_counter() - t0
            cid = case_id(i)
            write_image(image, staging / "imagesTr" / f"{cid}_0000.nii.gz")
            write_labels(labels, staging / "labelsTr" / f"{cid}.nii.gz", reference=image)
            counts += np.bincount(labels.array.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
            ids.append(cid)
            if progress is not None:
                progress(i + 1, cases, cid)
        description = (
            f"Procedural abdominal CT phantom (DINO-Mix Studio generator v{GENERATOR_VERSION}, "
            f"seed {seed}, size {size}). Synthetic data, not patient images."
        )
        dataset = labelmap.to_dataset_json_dict(
            num_training=cases, channel_names={"0": "CT"}, file_ending=".nii.gz",
            name=f"dinomix_phantom_seed{seed}_{size}",
        )
        dataset["description"] = description
        dataset["dinomix_phantom"] = {"seed": int(seed), "size": size, "generator_version": GENERATOR_VERSION}
        write_dataset_json(staging / "dataset.json", dataset)
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    total = int(counts.sum())
    names = list(labelmap.names)
    return {
        "out_dir": str(out),
        "case_ids": ids,
        "size": size,
        "shape_zyx": PHANTOM_SIZES[size].shape_zyx,
        "spacing_zyx": PHANTOM_SIZES[size].spacing_zyx,
        "voxel_counts": {names[v]: int(counts[v]) for v in range(NUM_CLASSES)},
        "fractions": {names[v]: float(counts[v]) / total for v in range(NUM_CLASSES)},
        "seconds_per_case": gen_seconds / cases,
        "seconds_total": time.perf_counter() - start,
    }


# -- swapping a finished data set in ------------------------------------------------------
# A staging folder is a hidden sibling ".<out>.phantom-XXXX" holding _STAGING_MARK until it
# is in place. A sibling without the mark is an old data set that an exchange displaced.

_SIBLING_TAG = ".phantom-"
_STAGING_MARK = ".dinomix-phantom-staging"
_DATASET_DIRS = {"imagesTr": "_0000.nii.gz", "labelsTr": ".nii.gz"}


def _swap_in(staging: Path, out: Path) -> None:
    """Put the finished ``staging`` folder at ``out`` in one step; keep the user's other files."""
    if not out.exists():
        (staging / _STAGING_MARK).unlink()
        os.rename(staging, out)
        return
    if _exchange(staging, out):
        (out / _STAGING_MARK).unlink()  # it travelled with the new data set
        old = staging  # now holds the old data set
    else:  # no atomic exchange here: move the old one aside, then the new one in
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}{_SIBLING_TAG}", dir=out.parent))
        os.rename(out, old / "old")
        (staging / _STAGING_MARK).unlink()
        os.rename(staging, out)
        old = _flatten(old)
    _carry_over(old, out)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _flatten(holder: Path) -> Path:
    """``holder/old`` -> ``holder`` (an unmarked sibling, as after an exchange)."""
    inner = holder / "old"
    for entry in inner.iterdir():
        os.replace(entry, holder / entry.name)
    inner.rmdir()
    return holder


def _is_case_file(sub: str, name: str) -> bool:
    suffix = _DATASET_DIRS[sub]
    stem = name[: -len(suffix)] if name.endswith(suffix) else ""
    return stem.startswith(f"{CASE_PREFIX}_") and stem[len(CASE_PREFIX) + 1 :].isdigit()


def _carry_over(old: Path, new: Path) -> None:
    """Move what the user kept beside the old data set into the new one, then drop the old one.

    Only the old dataset.json and phantom case files are left behind (stale cases of an
    earlier, larger run must go so numTraining holds); anything else keeps its place.
    """
    for entry in sorted(old.iterdir()):
        if entry.name in ("dataset.json", _STAGING_MARK, "old"):
            continue
        if entry.name in _DATASET_DIRS and entry.is_dir() and not entry.is_symlink():
            for item in sorted(entry.iterdir()):
                dest = new / entry.name / item.name
                if not _is_case_file(entry.name, item.name) and not dest.exists():
                    dest.parent.mkdir(exist_ok=True)
                    os.replace(item, dest)
        elif not (new / entry.name).exists():
            os.replace(entry, new / entry.name)
    _remove_old_dataset(old)


def _remove_old_dataset(old: Path) -> None:
    """Delete only the old data set's own files; a folder still holding anything else stays."""
    for name in ("dataset.json", _STAGING_MARK):
        (old / name).unlink(missing_ok=True)
    for sub in _DATASET_DIRS:
        folder = old / sub
        if folder.is_dir() and not folder.is_symlink():
            for item in folder.iterdir():
                if _is_case_file(sub, item.name) and item.is_file():
                    item.unlink()
            with contextlib.suppress(OSError):
                folder.rmdir()
    with contextlib.suppress(OSError):
        old.rmdir()


def _finish_interrupted_swaps(out: Path) -> None:
    """Tidy after a run killed mid-way: drop unfinished staging folders, finish a swap."""
    parent = out.parent
    if not parent.is_dir():
        return
    for sibling in sorted(parent.glob(f".{glob.escape(out.name)}{_SIBLING_TAG}*")):
        if not sibling.is_dir() or sibling.is_symlink():
            continue
        if (sibling / _STAGING_MARK).exists():
            shutil.rmtree(sibling)  # our own half-built data set
            continue
        if (sibling / "old").is_dir():
            if not out.exists():  # killed between moving the old set aside and the new one in
                os.rename(sibling / "old", out)
                sibling.rmdir()
                continue
            _flatten(sibling)
        if out.is_dir():
            (out / _STAGING_MARK).unlink(missing_ok=True)
            _carry_over(sibling, out)


def _holds_dataset(folder: Path) -> bool:
    if (folder / "dataset.json").exists():
        return True
    return any(any((folder / sub).glob("*")) for sub in ("imagesTr", "labelsTr") if (folder / sub).is_dir())


# --------------------------------------------------------------------------------------
# Internals
