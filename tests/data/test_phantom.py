"""The built-in phantom: determinism, geometry, anatomy, realistic imbalance, data set layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dinomix_core.data.phantom import (
    AORTA,
    ESOPHAGUS,
    GALLBLADDER,
    L_ADRENAL,
    L_KIDNEY,
    LIVER,
    NUM_CLASSES,
    PANCREAS,
    PHANTOM_SIZES,
    R_ADRENAL,
    R_KIDNEY,
    SPLEEN,
    STOMACH,
    generate_case,
    write_phantom_dataset,
)
from dinomix_core.io import DinomixInputError, LabelMap, read_labels, read_volume

SEEDS_AND_CASES = [(0, 0), (0, 1), (1, 0), (2, 3), (5, 2)]


@pytest.fixture(scope="module")
def small_cases():
    return {key: generate_case(key[1], key[0], "small") for key in SEEDS_AND_CASES}


def _centroid(labels, value):
    return np.argwhere(labels == value).mean(axis=0)  # (z, y, x) voxel indices


def test_same_seed_gives_identical_arrays_other_seeds_differ(small_cases):
    image, labels = small_cases[(0, 1)]
    image2, labels2 = generate_case(1, 0, "small")
    assert image.array.tobytes() == image2.array.tobytes()
    assert labels.array.tobytes() == labels2.array.tobytes()
    other_seed = generate_case(1, 9, "small")[1]
    assert not np.array_equal(labels.array, other_seed.array)
    assert not np.array_equal(labels.array, small_cases[(0, 0)][1].array)


def test_grid_dtype_and_geometry(small_cases):
    image, labels = small_cases[(0, 0)]
    grid = PHANTOM_SIZES["small"]
    assert image.shape == labels.shape == grid.shape_zyx == (48, 96, 96)
    assert image.spacing_zyx == labels.spacing_zyx == (5.0, 4.0, 4.0)
    assert image.array.dtype == np.int16 and labels.array.dtype == np.uint8
    assert image.same_grid(labels)
    assert image.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    # Centred on the world origin: first voxel centre at -(n - 1) / 2 * spacing (x, y, z).
    assert image.origin_xyz == pytest.approx((-190.0, -190.0, -117.5))
    assert int(labels.array.max()) < NUM_CLASSES


@pytest.mark.parametrize("key", SEEDS_AND_CASES)
def test_every_organ_present_with_realistic_imbalance(small_cases, key):
    counts = np.bincount(small_cases[key][1].array.ravel(), minlength=NUM_CLASSES)
    frac = counts / counts.sum()
    assert counts[1:].min() >= 8, f"an organ has fewer than 8 voxels: {counts.tolist()}"
    assert frac[0] >= 0.90  # background dominates, as in real abdominal CT (94.5 % there)
    assert 0.015 <= frac[LIVER] <= 0.06  # real case: 3.0 %
    assert counts[LIVER] == counts[1:].max()  # the liver is the largest organ
    for adrenal in (R_ADRENAL, L_ADRENAL):  # real case: 0.012 % and 0.015 %
        assert 5e-5 <= frac[adrenal] <= 6e-4
        assert counts[adrenal] * 30 < counts[LIVER]
    for organ in (SPLEEN, R_KIDNEY, L_KIDNEY, STOMACH):  # real case: 0.35-0.70 %
        assert 1e-3 <= frac[organ] <= 1.5e-2


def test_imbalance_is_of_the_order_of_the_real_ct(small_cases, real_ct_dir):
    real = read_labels(real_ct_dir / "seg_btcv13.nii.gz").array
    rc = np.bincount(real.ravel(), minlength=NUM_CLASSES).astype(float)
    pc = sum(np.bincount(lab.array.ravel(), minlength=NUM_CLASSES) for _, lab in small_cases.values()).astype(float)
    for organ in (SPLEEN, R_KIDNEY, L_KIDNEY, GALLBLADDER, STOMACH, AORTA, PANCREAS, R_ADRENAL, L_ADRENAL):
        real_ratio, ours = rc[LIVER] / rc[organ], pc[LIVER] / pc[organ]
        assert real_ratio / 4 <= ours <= real_ratio * 4, (organ, real_ratio, ours)


def test_anatomy_is_consistent_with_the_documented_orientation(small_cases):
    # x grows to the patient's left, y to posterior, z to superior (LPS, identity direction).
    for _, labels in small_cases.values():
        lab = labels.array
        liver, spleen = _centroid(lab, LIVER), _centroid(lab, SPLEEN)
        assert liver[2] < spleen[2]  # liver on the patient's right
        assert _centroid(lab, R_KIDNEY)[2] < _centroid(lab, L_KIDNEY)[2]
        assert _centroid(lab, R_ADRENAL)[2] < _centroid(lab, L_ADRENAL)[2]
        assert _centroid(lab, GALLBLADDER)[1] < _centroid(lab, R_KIDNEY)[1]  # gallbladder anterior
        assert _centroid(lab, PANCREAS)[1] < _centroid(lab, AORTA)[1] + 3  # pancreas in front of the aorta
        assert _centroid(lab, ESOPHAGUS)[0] > _centroid(lab, R_KIDNEY)[0]  # esophagus in the upper slices
        for adrenal in (R_ADRENAL, L_ADRENAL):
            assert _centroid(lab, adrenal)[0] > _centroid(lab, R_KIDNEY)[0]


def test_intensities_are_realistic_and_overlap(small_cases):
    image, labels = small_cases[(0, 0)]
    hu, lab = image.array.astype(float), labels.array
    assert hu[:, :3, :3].mean() < -900  # air outside the body
    assert (hu[lab == STOMACH] < -500).any()  # gas in the stomach
    assert hu.max() > 300  # bone
    means = {v: hu[lab == v].mean() for v in (LIVER, SPLEEN, R_KIDNEY, PANCREAS, AORTA)}
    assert all(-20 < m < 250 for m in means.values()), means
    # Intensity alone cannot separate liver and spleen: most spleen voxels fall in the
    # liver's central 90 % range.
    lo, hi = np.percentile(hu[lab == LIVER], [5, 95])
    spleen = hu[lab == SPLEEN]
    assert ((spleen >= lo) & (spleen <= hi)).mean() > 0.5
    # Noise: the liver's interior has a standard deviation of several HU.
    assert hu[lab == LIVER].std() > 5


def test_small_and_medium_show_the_same_anatomy(small_cases):
    small = small_cases[(0, 0)][1]
    image_m, medium = generate_case(0, 0, "medium")
    assert medium.shape == (96, 192, 192) and medium.spacing_zyx == (2.5, 2.0, 2.0)
    assert image_m.origin_xyz == pytest.approx((-191.0, -191.0, -118.75))
    vol_s = np.bincount(small.array.ravel(), minlength=NUM_CLASSES) * np.prod(small.spacing_zyx)
    vol_m = np.bincount(medium.array.ravel(), minlength=NUM_CLASSES) * np.prod(medium.spacing_zyx)
    ratio = vol_m[1:] / vol_s[1:]
    assert np.all((ratio > 0.8) & (ratio < 1.25)), ratio.round(2).tolist()


def test_bad_arguments_are_refused():
    with pytest.raises(DinomixInputError, match="size"):
        generate_case(0, 0, "huge")
    with pytest.raises(DinomixInputError):
        generate_case(-1, 0)


def test_write_dataset_layout_and_refusal_to_clobber(tmp_path, small_cases):
    out = tmp_path / "ds"
    seen = []
    stats = write_phantom_dataset(out, 2, 0, "small", progress=lambda d, t, c: seen.append((d, t, c)))
    assert seen == [(1, 2, "phantom_000"), (2, 2, "phantom_001")]
    data = json.loads((out / "dataset.json").read_text())
    assert data["channel_names"] == {"0": "CT"}
    assert data["file_ending"] == ".nii.gz" and data["numTraining"] == 2
    assert list(data["labels"].items()) == [(n, v) for v, n in enumerate(LabelMap.preset("btcv13").names)]
    assert list(data["labels"])[1:4] == ["spleen", "right_kidney", "left_kidney"]
    image = read_volume(out / "imagesTr" / "phantom_001_0000.nii.gz")
    labels = read_labels(out / "labelsTr" / "phantom_001.nii.gz", reference=image)
    expected_image, expected_labels = small_cases[(0, 1)]
    np.testing.assert_array_equal(image.array, expected_image.array)
    np.testing.assert_array_equal(labels.array, expected_labels.array)
    assert image.spacing_zyx == pytest.approx(expected_image.spacing_zyx)
    assert sum(stats["fractions"].values()) == pytest.approx(1.0)
    assert stats["voxel_counts"]["liver"] > stats["voxel_counts"]["right_adrenal_gland"] > 0
    assert stats["case_ids"] == ["phantom_000", "phantom_001"]

    before = (out / "labelsTr" / "phantom_000.nii.gz").read_bytes()
    with pytest.raises(DinomixInputError, match="already holds a data set"):
        write_phantom_dataset(out, 1, 5, "small")
    assert (out / "labelsTr" / "phantom_000.nii.gz").read_bytes() == before
    write_phantom_dataset(out, 1, 5, "small", overwrite=True)  # fewer cases: stale ones go
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["phantom_000.nii.gz"]
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["phantom_000_0000.nii.gz"]
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 1
