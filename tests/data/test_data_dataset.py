"""nnU-Net data set discovery, labeled/unlabeled selection (counts, ids, split files) and loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from _data_fakes import CountingTeacher, synthetic_ct
from dinomix_core.data.dataset import CaseSpec, load_cases, load_nnunet_dataset, remove_spilled, select_labeled
from dinomix_core.data.token_cache import TokenCache
from dinomix_core.io.errors import DinomixInputError

SPLITS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "splits"
SPACING_XYZ = (0.8, 0.7, 2.5)


def _write(array: np.ndarray, path: Path, spacing=SPACING_XYZ) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 5.0, 30.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)


def _dataset(root: Path, ids=("case_002", "case_000", "case_001"), *, labels=None) -> Path:
    for i, cid in enumerate(ids):
        hu, label = synthetic_ct((16, 32, 32), seed=i)
        _write(hu, root / "imagesTr" / f"{cid}_0000.nii.gz")
        if labels is None or cid in labels:
            _write(label, root / "labelsTr" / f"{cid}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "liver": 1, "kidney": 2, "adrenal": 3},
        "numTraining": len(ids),
        "file_ending": ".nii.gz",
    }))
    return root


def test_load_nnunet_dataset_pairs_images_and_labels(tmp_path):
    cases, labelmap, meta = load_nnunet_dataset(_dataset(tmp_path))
    assert [c.case_id for c in cases] == ["case_000", "case_001", "case_002"]
    assert cases[1].image_path == tmp_path / "imagesTr" / "case_001_0000.nii.gz"
    assert cases[1].label_path == tmp_path / "labelsTr" / "case_001.nii.gz"
    assert labelmap.names == ["background", "liver", "kidney", "adrenal"]
    assert meta["numTraining"] == 3


def test_missing_dataset_json_is_a_clear_error(tmp_path):
    _dataset(tmp_path)
    (tmp_path / "dataset.json").unlink()
    with pytest.raises(DinomixInputError, match="dataset.json") as info:
        load_nnunet_dataset(tmp_path)
    assert "labels" in str(info.value)  # the fix says what to write


def test_image_without_label_and_label_without_image(tmp_path):
    root = _dataset(tmp_path / "a", labels={"case_000", "case_001"})
    with pytest.raises(DinomixInputError, match="case_002_0000.nii.gz.*has no label"):
        load_nnunet_dataset(root)
    cases, _, _ = load_nnunet_dataset(root, allow_unlabeled=True)
    assert [c.label_path is None for c in cases] == [False, False, True]

    root = _dataset(tmp_path / "b")
    (root / "imagesTr" / "case_001_0000.nii.gz").unlink()
    with pytest.raises(DinomixInputError, match="case_001.nii.gz.*has no image"):
        load_nnunet_dataset(root)


def test_multichannel_and_misnamed_images_are_rejected(tmp_path):
    root = _dataset(tmp_path)
    (root / "imagesTr" / "case_000_0000.nii.gz").rename(root / "imagesTr" / "case_000.nii.gz")
    with pytest.raises(DinomixInputError, match="channel suffix"):
        load_nnunet_dataset(root)


def _specs(ids):
    return [CaseSpec(cid, Path(f"/x/{cid}_0000.nii.gz"), Path(f"/x/{cid}.nii.gz")) for cid in ids]


def test_select_labeled_by_count_ids_and_file(tmp_path):
    cases = _specs(["c3", "c1", "c2", "c4"])
    labeled, unlabeled = select_labeled(cases, 2)
    assert [c.case_id for c in labeled] == ["c1", "c2"]
    assert [c.case_id for c in unlabeled] == ["c3", "c4"]
    assert all(c.label_path is None for c in unlabeled)
    assert [c.case_id for c in select_labeled(cases, "3")[0]] == ["c1", "c2", "c3"]
    assert [c.case_id for c in select_labeled(cases, "c4, c2")[0]] == ["c2", "c4"]
    assert [c.case_id for c in select_labeled(cases, ["c3"])[0]] == ["c3"]
    split = tmp_path / "labeled.txt"
    split.write_text("c4\n\n# comment\nc1\n")
    labeled, unlabeled = select_labeled(cases, split)
    assert [c.case_id for c in labeled] == ["c1", "c4"] and len(unlabeled) == 2
    assert [c.case_id for c in select_labeled(cases, str(split))[0]] == ["c1", "c4"]


def test_select_labeled_errors(tmp_path):
    cases = _specs(["c1", "c2"])
    with pytest.raises(DinomixInputError, match="c9"):
        select_labeled(cases, "c1,c9")
    with pytest.raises(DinomixInputError, match="3 labeled"):
        select_labeled(cases, 3)
    split = tmp_path / "bad.txt"
    split.write_text("c2\nnope\n")
    with pytest.raises(DinomixInputError, match="nope") as info:
        select_labeled(cases, split)
    assert str(split) in str(info.value)
    unlabeled = [CaseSpec("c1", Path("/x/c1_0000.nii.gz"), None), *cases[1:]]
    with pytest.raises(DinomixInputError, match="without a label"):
        select_labeled(unlabeled, "c1")


def test_numeric_split_ids_match_case_id_tails():
    cases = _specs(["img0001", "img0002", "img0010"])
    assert [c.case_id for c in select_labeled(cases, ["0002", "0010"])[0]] == ["img0002", "img0010"]
    ambiguous = _specs(["a0002", "b0002"])
    with pytest.raises(DinomixInputError, match="several"):
        select_labeled(ambiguous, ["0002"])
    # A tail match must not cut a number: "0002" is not case "img10002".
    with pytest.raises(DinomixInputError):
        select_labeled(_specs(["img10002"]), ["0002"])


@pytest.mark.skipif(not SPLITS.is_dir(), reason="shared split files not present")
def test_real_dhc_and_genericssl_split_files():
    amos = SPLITS / "DHC" / "amos_data" / "splits"
    train_ids = [line.strip() for line in (amos / "train.txt").read_text().splitlines() if line.strip()]
    cases = _specs(train_ids)
    labeled, unlabeled = select_labeled(cases, amos / "labeled_5p.txt")
    assert len(labeled) == 10 and len(unlabeled) == len(train_ids) - 10
    expected_unlabeled = {line.strip() for line in (amos / "unlabeled_5p.txt").read_text().splitlines() if line.strip()}
    assert {c.case_id for c in unlabeled} == expected_unlabeled
    synapse = SPLITS / "GenericSSL" / "Synapse_data" / "split_txts"
    ids = [line.strip() for line in (synapse / "train.txt").read_text().splitlines() if line.strip()]
    labeled, unlabeled = select_labeled(_specs([f"img{i}" for i in ids]), synapse / "labeled_0.2.txt")
    assert len(labeled) == 4 and len(unlabeled) == len(ids) - 4


def test_load_cases_with_tokens_and_cache(tmp_path):
    cases, labelmap, _ = load_nnunet_dataset(_dataset(tmp_path / "ds"))
    labeled, unlabeled = select_labeled(cases, 1)
    teacher = CountingTeacher()
    cache = TokenCache(tmp_path / "cache")
    seen = []
    loaded = load_cases(labeled + unlabeled, labelmap=labelmap, teacher=teacher, cache=cache, stride=8,
                        progress=lambda done, total, cid: seen.append((done, total, cid)))
    assert seen == [(1, 3, "case_000"), (2, 3, "case_001"), (3, 3, "case_002")]
    first = loaded[0]
    hu, label = synthetic_ct((16, 32, 32), seed=1)  # case_000 was written second (seed 1)
    assert first.case_id == "case_000"
    assert first.image.dtype == np.float32 and first.image.shape == (16, 32, 32)
    assert 0.0 <= first.image.min() and first.image.max() <= 1.0
    np.testing.assert_allclose(first.image, np.clip((hu - (-75.0)) / 350.0, 0, 1), atol=1e-6)
    assert first.label.dtype == np.uint8
    np.testing.assert_array_equal(first.label, label)
    assert first.tokens.dtype == np.float16 and first.tokens.shape == (16, teacher.embed_dim, 4, 4)
    assert first.spacing_zyx == pytest.approx(tuple(reversed(SPACING_XYZ)))
    assert first.volume.array is first.image and first.volume.origin_xyz == pytest.approx((-10.0, 5.0, 30.0))
    assert [c.label is None for c in loaded] == [False, True, True]
    calls = teacher.calls
    again = load_cases(labeled, labelmap=labelmap, teacher=teacher, cache=TokenCache(tmp_path / "cache"), stride=8)
    assert teacher.calls == calls
    np.testing.assert_array_equal(again[0].tokens, first.tokens)
    plain = load_cases(labeled, labelmap=labelmap)
    assert plain[0].tokens is None


def test_spilled_cases_are_memory_maps_of_the_same_arrays_and_are_removed(tmp_path):
    cases, labelmap, _ = load_nnunet_dataset(_dataset(tmp_path / "ds"))
    in_memory = load_cases(cases, labelmap=labelmap)
    spill = tmp_path / "run" / ".cases"
    mapped = load_cases(cases, labelmap=labelmap, spill_dir=spill)
    for a, b in zip(in_memory, mapped):
        assert isinstance(b.image, np.memmap) and isinstance(b.label, np.memmap)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)
        assert b.volume.array is b.image and b.volume.same_grid(a.volume)
        assert b.image.flags.writeable  # copy-on-write: in-place work never reaches the file
    before = np.load(sorted(spill.glob("*-image.npy"))[0]).copy()
    mapped[0].image[:] = 0.5
    np.testing.assert_array_equal(np.load(sorted(spill.glob("*-image.npy"))[0]), before)
    assert len(list(spill.glob("*.npy"))) == 6  # 3 images, 3 labels
    remove_spilled(spill)
    assert not spill.exists()
    np.testing.assert_array_equal(mapped[1].label, in_memory[1].label)  # maps outlive the files (Linux)


def test_load_cases_validates_geometry_and_values(tmp_path):
    root = _dataset(tmp_path)
    cases, labelmap, _ = load_nnunet_dataset(root)
    _, label = synthetic_ct((16, 32, 32))
    _write(label, root / "labelsTr" / "case_001.nii.gz", spacing=(1.0, 1.0, 1.0))
    with pytest.raises(DinomixInputError, match="case_001.nii.gz"):
        load_cases([cases[1]], labelmap=labelmap)
    bad = label.copy()
    bad[0, 0, 0] = 9
    _write(bad, root / "labelsTr" / "case_002.nii.gz")
    with pytest.raises(DinomixInputError, match="case_002.nii.gz"):
        load_cases([cases[2]], labelmap=labelmap)


def test_spill_folder_removes_what_dead_processes_left(tmp_path):
    """A run killed with SIGKILL leaves its spilled cases; the next run on that folder removes them."""
    import os

    from dinomix_core.data.dataset import spill_folder

    dead = tmp_path / ".cases-999999999"
    (dead / "labeled").mkdir(parents=True)
    (dead / "labeled" / "00001-image.npy").write_bytes(b"x" * 10)
    alive = tmp_path / f".cases-{os.getppid()}"  # another process still training here
    alive.mkdir()
    (alive / "00001-image.npy").write_bytes(b"x")
    mine = spill_folder(tmp_path)
    assert mine == tmp_path / f".cases-{os.getpid()}"
    assert not dead.exists() and (alive / "00001-image.npy").exists()
