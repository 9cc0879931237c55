"""Class-aware patch sampling: rare classes are seen, token crops align, small volumes pad."""

from __future__ import annotations

import numpy as np
import pytest

from _data_fakes import coordinate_tokens, make_case, synthetic_ct
from dinomix_core.data.patches import PatchSampler
from dinomix_core.data.preprocess import student_intensity


@pytest.fixture()
def case():
    hu, label = synthetic_ct((16, 32, 32))
    return make_case("toy", student_intensity(hu), label, coordinate_tokens(hu.shape, 8))


def test_class_probabilities_follow_inverse_sqrt_frequency(case):
    sampler = PatchSampler((8, 16, 16), stride=8)
    counts = {c: int((case.label == c).sum()) for c in (1, 2, 3)}
    weights = {c: 1 / np.sqrt(n) for c, n in counts.items()}
    total = sum(weights.values())
    probs = sampler.class_probabilities(case)
    assert set(probs) == {1, 2, 3}
    for c in probs:
        assert probs[c] == pytest.approx(weights[c] / total)
    assert probs[3] > probs[2] > probs[1]  # the tiny organ is the most likely centre
    uniform = PatchSampler((8, 16, 16), stride=8, class_weights="uniform").class_probabilities(case)
    assert all(p == pytest.approx(1 / 3) for p in uniform.values())
    explicit = PatchSampler((8, 16, 16), stride=8, class_weights=[0, 0, 1, 3]).class_probabilities(case)
    assert explicit == pytest.approx({1: 0.0, 2: 0.25, 3: 0.75})


def test_rare_class_is_centred_often_enough(case):
    fg_fraction = 0.5
    sampler = PatchSampler((8, 16, 16), fg_fraction=fg_fraction, stride=8)
    rng = np.random.default_rng(0)
    n = 600
    share = sampler.class_probabilities(case)[3]
    centred = contains = 0
    for _ in range(n):
        patch = sampler.sample(case, rng)
        assert patch["origin"][1] % 8 == 0 and patch["origin"][2] % 8 == 0
        if patch["centre_class"]:
            # A class-centred patch always contains a voxel of its class.
            assert (patch["label"] == patch["centre_class"]).any()
        centred += patch["centre_class"] == 3
        contains += bool((patch["label"] == 3).any())
    expected = fg_fraction * share
    # Binomial 4-sigma band around the expected centring rate; containment can only be higher.
    sigma = np.sqrt(expected * (1 - expected) / n)
    assert abs(centred / n - expected) < 4 * sigma
    assert contains / n >= expected - 4 * sigma
    # Uniform sampling alone shows the 3-voxel organ far less often.
    uniform = PatchSampler((8, 16, 16), fg_fraction=0.0, stride=8)
    seen = sum(bool((uniform.sample(case, rng)["label"] == 3).any()) for _ in range(n))
    assert 2 * seen < contains


def test_crop_aligns_image_label_and_tokens(case):
    s = 8
    sampler = PatchSampler((8, 16, 24), fg_fraction=0.7, stride=s)
    rng = np.random.default_rng(3)
    for _ in range(50):
        patch = sampler.sample(case, rng)
        z0, y0, x0 = patch["origin"]
        np.testing.assert_array_equal(patch["image"][0], case.image[z0:z0 + 8, y0:y0 + 16, x0:x0 + 24])
        np.testing.assert_array_equal(patch["label"], case.label[z0:z0 + 8, y0:y0 + 16, x0:x0 + 24])
        tokens = patch["tokens"]
        assert tokens.shape == (4, 8, 2, 3) and tokens.dtype == np.float16  # the cache's own dtype
        dz, di, dj = np.meshgrid(np.arange(8), np.arange(2), np.arange(3), indexing="ij")
        np.testing.assert_array_equal(tokens[0], z0 + dz)
        np.testing.assert_array_equal(tokens[1], y0 // s + di)
        np.testing.assert_array_equal(tokens[2], x0 // s + dj)
        # Every voxel's token is the one of the cell it lies in.
        for vz, vy, vx in [(0, 0, 0), (7, 15, 23), (3, 9, 17)]:
            assert tokens[1, vz, vy // s, vx // s] == (y0 + vy) // s
            assert tokens[2, vz, vy // s, vx // s] == (x0 + vx) // s


def test_small_volume_is_padded_with_air_background_and_zero_tokens():
    s = 8
    image = np.full((5, 12, 20), 0.7, dtype=np.float32)
    label = np.ones((5, 12, 20), dtype=np.uint8)
    case = make_case("small", image, label, coordinate_tokens(image.shape, s) + np.float16(1))
    sampler = PatchSampler((8, 24, 32), stride=s)
    rng = np.random.default_rng(0)
    for _ in range(10):
        patch = sampler.sample(case, rng)
        assert patch["origin"] == (0, 0, 0)
        assert patch["image"].shape == (1, 8, 24, 32) and patch["label"].shape == (8, 24, 32)
        np.testing.assert_array_equal(patch["image"][0, :5, :12, :20], np.float32(0.7))
        assert (patch["image"][0, 5:] == 0).all() and (patch["image"][0, :, 12:] == 0).all()
        assert (patch["image"][0, :, :, 20:] == 0).all()
        assert (patch["label"][:5, :12, :20] == 1).all() and patch["label"].sum() == 5 * 12 * 20
        tokens = patch["tokens"]
        assert tokens.shape == (4, 8, 3, 4)
        # Token grid of the case is (2, 3): cells beyond it and slices beyond z=5 are zero.
        assert (tokens[:, :5, :2, :3] > 0).all()
        assert (tokens[:, 5:] == 0).all() and (tokens[:, :, 2:] == 0).all() and (tokens[:, :, :, 3:] == 0).all()


def test_unlabeled_case_samples_uniformly(case):
    unlabeled = make_case("u", case.image, None, case.tokens)
    sampler = PatchSampler((8, 16, 16), fg_fraction=1.0, stride=8)
    rng = np.random.default_rng(0)
    origins = set()
    for _ in range(40):
        patch = sampler.sample(unlabeled, rng)
        assert patch["label"] is None and patch["centre_class"] == 0
        origins.add(patch["origin"])
    assert len(origins) > 5


def test_samples_are_reproducible_from_the_rng(case):
    sampler = PatchSampler((8, 16, 16), stride=8)
    a = [sampler.sample(case, np.random.default_rng(7))["origin"] for _ in range(3)]
    b = [PatchSampler((8, 16, 16), stride=8).sample(case, np.random.default_rng(7))["origin"] for _ in range(3)]
    assert a == b


def test_bad_configuration_is_rejected(case):
    with pytest.raises(ValueError, match="multiples"):
        PatchSampler((8, 12, 16), stride=8)
    with pytest.raises(ValueError):
        PatchSampler((8, 16, 16), fg_fraction=1.5)
    with pytest.raises(ValueError):
        PatchSampler((8, 16, 16), class_weights="loudest")
    sampler = PatchSampler((8, 16, 16), stride=8)
    with pytest.raises(ValueError, match="stride"):
        sampler.crop(case, (0, 4, 0))
    bad = make_case("bad", case.image, case.label, case.tokens[:, :, :3])
    with pytest.raises(ValueError, match="tokens"):
        sampler.crop(bad, (0, 0, 0))


def test_real_ct_adrenal_gland_is_sampled(real_ct_dir):
    from dinomix_core.io import read_labels, read_volume

    volume = read_volume(real_ct_dir / "ct.nii.gz")
    label = read_labels(real_ct_dir / "seg_btcv13.nii.gz", reference=volume).array
    case = make_case("real", student_intensity(volume.array), label.astype(np.uint8))
    sampler = PatchSampler((32, 64, 64), fg_fraction=0.67, stride=8)
    probs = sampler.class_probabilities(case)
    assert probs[12] > probs[6]  # right adrenal (166 voxels) over liver (41,692)
    rng = np.random.default_rng(0)
    n = 200
    hits = sum(bool((sampler.sample(case, rng)["label"] == 12).any()) for _ in range(n))
    expected = 0.67 * probs[12]
    assert hits / n >= expected - 4 * np.sqrt(expected * (1 - expected) / n)
