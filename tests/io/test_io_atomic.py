"""Atomic writes: all or nothing, no temp files left, normal file permissions."""

import os
import stat

import pytest

from dinomix_core.io.atomic import atomic_path, atomic_write_text


def test_success_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a" / "labels.nii.gz"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["labels.nii.gz"]


def test_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "labels.nii.gz"
    target.write_text("precious")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.nii.gz"]


def test_new_files_get_umask_permissions_and_old_modes_are_kept(tmp_path):
    fresh = tmp_path / "fresh.json"
    atomic_write_text(fresh, "{}")
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~mask
    kept = tmp_path / "kept.json"
    kept.write_text("x")
    os.chmod(kept, 0o640)
    atomic_write_text(kept, "y")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640
