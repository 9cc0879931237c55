"""A full disk never leaves a cut-short file and always says "disk full at PATH" (issue 13, item 2).

Two ways to fill the disk: monkeypatched low-level writes that fail with ENOSPC (everywhere),
and a real 1 MiB tmpfs (where this process may mount one, i.e. as root).
"""

from __future__ import annotations

import errno
import gzip
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from dinomix_core.io import Volume, read_volume, write_image, write_labels
from dinomix_core.io.atomic import DiskFullError, atomic_path, atomic_write_text, check_complete

SHAPE = (48, 96, 96)  # z, y, x: the small phantom grid, ~0.9 MB of int16


def noisy_volume(seed: int = 0) -> Volume:
    array = np.random.default_rng(seed).integers(-1000, 1000, size=SHAPE).astype(np.int16)
    return Volume(array, spacing_zyx=(5.0, 4.0, 4.0), origin_xyz=(0.0, 0.0, 0.0))


def names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- simulated: the writer reports success but the bytes are short ---------------------------

def _truncating_execute(fraction: float):
    real = sitk.ImageFileWriter.Execute

    def execute(self, image, *args):
        real(self, image, *args)
        path = self.GetFileName()
        with open(path, "rb+") as fh:  # what SimpleITK's NIfTI writer leaves on a full disk
            fh.truncate(int(os.path.getsize(path) * fraction))
    return execute


@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.nii", "ct.nrrd", "ct.seg.nrrd"])
@pytest.mark.parametrize("fraction", [0.0, 0.5])
def test_a_silently_truncated_image_is_caught_and_the_old_file_kept(tmp_path, monkeypatch, name, fraction):
    target = tmp_path / name
    write_image(noisy_volume(1), target)
    old = target.read_bytes()
    monkeypatch.setattr(sitk.ImageFileWriter, "Execute", _truncating_execute(fraction))
    monkeypatch.setattr("dinomix_core.io.atomic.nearly_full", lambda folder: True)
    with pytest.raises(DiskFullError, match=f"disk full at {target}") as info:
        write_image(noisy_volume(2), target)
    assert "\n" not in str(info.value)
    assert target.read_bytes() == old
    assert names(tmp_path) == [name]  # no temp file left


def test_a_short_write_on_a_disk_with_room_is_reported_as_such(tmp_path, monkeypatch):
    target = tmp_path / "seg.nii.gz"
    monkeypatch.setattr(sitk.ImageFileWriter, "Execute", _truncating_execute(0.5))
    with pytest.raises(Exception, match="cut short") as info:
        write_labels(np.zeros(SHAPE, np.uint8), target, reference=noisy_volume())
    assert str(target) in str(info.value)
    assert names(tmp_path) == []


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_enospc_from_python_writes_and_fsync(tmp_path, monkeypatch, where):
    target = tmp_path / "report.json"
    target.write_text("old")
    if where == "write":
        def fail(*a, **k):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr("builtins.open", _open_failing_writes(fail))
    else:
        def fail(fd):
            raise OSError(errno.ENOSPC, "No space left on device")  # delayed allocation
        monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(DiskFullError, match=f"disk full at {target}"):
        atomic_write_text(target, "new " * 1000)
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert names(tmp_path) == ["report.json"]


def _open_failing_writes(fail):
    real_open = open

    class Handle:
        def __init__(self, fh):
            self._fh = fh

        def write(self, data):
            fail()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._fh.close()

        def __getattr__(self, name):
            return getattr(self._fh, name)

    def fake_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        return Handle(fh) if "w" in mode else fh
    return fake_open


def test_check_complete_knows_each_framing(tmp_path):
    good = tmp_path / "a.nii.gz"
    write_image(noisy_volume(), good)
    assert check_complete(good) is None
    raw = good.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    assert "ends early" in check_complete(tmp_path / "cut.nii.gz")
    # A complete gzip stream of a short NIfTI: the CRC is right, the length is not.
    inner = gzip.decompress(raw)
    (tmp_path / "short.nii.gz").write_bytes(gzip.compress(inner[: len(inner) // 3]))
    assert "NIfTI header" in check_complete(tmp_path / "short.nii.gz")
    np.save(tmp_path / "t.npy", np.zeros((64, 64), np.float32))
    cut = (tmp_path / "t.npy").read_bytes()[:1000]
    (tmp_path / "t.npy").write_bytes(cut)
    assert ".npy header" in check_complete(tmp_path / "t.npy")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    assert "empty" in check_complete(tmp_path / "empty.nii.gz")
    (tmp_path / "notes.txt").write_text("anything")
    assert check_complete(tmp_path / "notes.txt") is None


def test_an_error_inside_the_block_on_a_roomy_disk_is_not_called_disk_full(tmp_path):
    with pytest.raises(ValueError, match="boom"):
        with atomic_path(tmp_path / "x.bin"):
            raise ValueError("boom")
    assert names(tmp_path) == []


# -- real: a 1 MiB tmpfs --------------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.nii", "ct.nrrd", "ct.mha", "ct.mhd"])
def test_real_full_disk_every_format(tiny_disk, name):
    (tiny_disk / "filler").write_bytes(b"\0" * 900_000)  # ~150 kB left: any image is cut short
    with pytest.raises(DiskFullError, match=f"disk full at {tiny_disk / name}") as info:
        write_image(noisy_volume(), tiny_disk / name)
    assert "\n" not in str(info.value)
    assert names(tiny_disk) == ["filler"]


def test_real_full_disk_keeps_the_old_file(tiny_disk):
    target = tiny_disk / "ct.nii.gz"
    small = Volume(np.zeros((8, 16, 16), np.int16), spacing_zyx=(1.0, 1.0, 1.0), origin_xyz=(0.0, 0.0, 0.0))
    write_image(small, target)
    old = target.read_bytes()
    (tiny_disk / "filler").write_bytes(b"\0" * 900_000)
    with pytest.raises(DiskFullError):
        write_image(noisy_volume(), target)
    assert target.read_bytes() == old
    assert read_volume(target).shape == (8, 16, 16)
    assert names(tiny_disk) == ["ct.nii.gz", "filler"]


def test_real_full_disk_phantom_cli(tiny_disk):
    out = tiny_disk / "ds"
    proc = subprocess.run([sys.executable, "-m", "dinomix_core.cli", "phantom", "--out", str(out), "--cases", "3"],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith(("** ERROR", "MetaImage"))]
    assert len(lines) == 1 and lines[0].startswith("error: disk full at ") and str(tiny_disk) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert names(tiny_disk) == []  # nothing half-written: no data set folder, no staging folder
