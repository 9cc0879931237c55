"""Target spacing and canonical orientation, end to end: what trains, what model.pt records, and that
every prediction lies on its input's exact grid and agrees in world space whatever the storage order."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from dinomix_core.data.dataset import CaseSpec, load_cases
from dinomix_core.data.phantom import generate_case, phantom_labelmap
from dinomix_core.data.preprocess import token_grid
from dinomix_core.engine._regrid import RegridSlabs
from dinomix_core.engine.checkpoint import MODEL_KIND, save_checkpoint
from dinomix_core.engine.config import TrainConfig
from dinomix_core.engine.inferer import predict_volume
from dinomix_core.engine.jobs import PredictJobSpec, run_predict_job
from dinomix_core.engine.pipeline import LoadedModel, predict_file, predict_with_uncertainty, train_on_dataset
from dinomix_core.engine.trainer import TeacherInfo, model_meta
from dinomix_core.io import LabelMap, Volume, read_labels, read_volume, write_dataset_json, write_image, write_labels
from dinomix_core.io.orientation import to_canonical
from dinomix_core.io.resample import resampled_size
from dinomix_core.models import create_student

from _engine_settings import TINY, TINY_TEACHER

SMALL, MEDIUM = (5.0, 4.0, 4.0), (2.5, 2.0, 2.0)
MEDIAN = (3.75, 3.0, 3.0)  # median of one small and one medium labeled case


def _crop(volume: Volume, shape) -> Volume:
    """The central ``shape`` (z, y, x) voxels, geometry kept (origin moved to the crop's voxel 0)."""
    starts = [(n - s) // 2 for n, s in zip(volume.shape, shape)]
    image = volume.to_sitk()[starts[2]: starts[2] + shape[2], starts[1]: starts[1] + shape[1], starts[0]: starts[0] + shape[0]]
    return Volume.from_sitk(image, modality=volume.modality)


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory):
    """An nnU-Net folder mixing phantom sizes: small (5x4x4 mm) and medium (2.5x2x2 mm) cases.

    Cropped to the same physical extent (120 x 96 x 96 mm) to keep the test fast.
    """
    root = tmp_path_factory.mktemp("mixed") / "data"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for index, size, shape in ((0, "small", (24, 24, 24)), (1, "medium", (48, 48, 48)), (2, "small", (24, 24, 24))):
        image, labels = generate_case(index, 11, size)
        image, labels = _crop(image, shape), _crop(labels, shape)
        cid = f"mix_{index:03d}"
        write_image(image, root / "imagesTr" / f"{cid}_0000.nii.gz")
        write_labels(labels, root / "labelsTr" / f"{cid}.nii.gz", reference=image)
    doc = phantom_labelmap().to_dataset_json_dict()
    write_dataset_json(root / "dataset.json", {**doc, "channel_names": {"0": "CT"}, "file_ending": ".nii.gz", "numTraining": 3})
    return root


def test_regrid_slabs_match_sitk_linear_resampling_and_keep_probabilities_normalised():
    rng = np.random.default_rng(0)
    src_spacing, dst_spacing = (3.0, 3.0, 3.0), (2.0, 0.8, 0.8)
    logits = rng.normal(size=(3, 7, 9, 8)).astype(np.float32)
    probs = torch.softmax(torch.from_numpy(logits), dim=0)
    dst_shape = resampled_size(probs.shape[1:], src_spacing, dst_spacing)
    got = torch.zeros((3, *dst_shape))
    seen = []

    def sink(z0, block):
        seen.append((z0, block.shape[1]))
        got[:, z0 : z0 + block.shape[1]] = block

    regrid = RegridSlabs(sink, probs.shape[1:], src_spacing, dst_shape, dst_spacing, slab=3)
    for z0, dz in ((0, 2), (2, 1), (3, 4)):  # network slabs of uneven depth, as the inferer hands them on
        regrid(z0, probs[:, z0 : z0 + dz])
    assert regrid.done and seen[0][0] == 0 and sum(dz for _, dz in seen) == dst_shape[0]
    assert torch.allclose(got.sum(dim=0), torch.ones(dst_shape), atol=1e-5)
    # Independent reference: SimpleITK's linear resampling of each channel onto the finer grid.
    inside = tuple(slice(0, int((n - 1) * s / d) + 1) for n, s, d in zip(probs.shape[1:], src_spacing, dst_spacing))
    for c in range(3):
        src = Volume(probs[c].numpy(), spacing_zyx=src_spacing)
        ref = sitk.Resample(src.to_sitk(), [int(n) for n in reversed(dst_shape)], sitk.Transform(), sitk.sitkLinear,
                            (0.0, 0.0, 0.0), tuple(reversed(dst_spacing)), src.direction, 0.0, sitk.sitkFloat32)
        ref = sitk.GetArrayFromImage(ref)
        np.testing.assert_allclose(got[c].numpy()[inside], ref[inside], atol=1e-5)


def test_a_thin_organ_comes_back_at_its_place_in_mm():
    # Class 1 is a one-voxel sheet at z = 9 mm on the 3 mm grid (p = 0.9 there, 0 elsewhere).
    probs = torch.zeros((2, 6, 4, 4))
    probs[0] = 1.0
    probs[:, 3] = torch.tensor([0.1, 0.9]).view(2, 1, 1)
    dst_shape = (9, 4, 4)  # 2 mm slices at 0, 2, ..., 16 mm
    labels = np.zeros(dst_shape, np.uint8)

    def sink(z0, block):
        labels[z0 : z0 + block.shape[1]] = block.argmax(dim=0).numpy()

    RegridSlabs(sink, (6, 4, 4), (3.0, 3.0, 3.0), dst_shape, (2.0, 3.0, 3.0))(0, probs)
    # The 8 and 10 mm slices lie within 1 mm of the sheet (p = 0.6 there); 6 and 12 mm are 3 mm away (p = 0).
    assert np.flatnonzero(labels[:, 0, 0]).tolist() == [4, 5]
    assert (labels[4:6] == 1).all() and (labels[:4] == 0).all() and (labels[6:] == 0).all()


def test_mixed_phantom_sizes_train_at_the_median_spacing_and_predict_on_each_input_grid(mixed_dir, tmp_path):
    cfg = TrainConfig(method="dinomix", steps=2, checkpoint_every=0, **TINY)
    result = train_on_dataset(cfg, mixed_dir, "mix_000,mix_001", tmp_path / "run", teacher_weights="random",
                              teacher_overrides=TINY_TEACHER, cache_dir=tmp_path / "tokens")
    model = LoadedModel(result.model_path, device="cpu")
    assert model.target_spacing == MEDIAN and model.reorient
    assert json.loads(result.run_json.read_text())["target_spacing_zyx"] == list(MEDIAN)
    for cid, spacing in (("mix_001", MEDIUM), ("mix_002", SMALL)):
        path = mixed_dir / "imagesTr" / f"{cid}_0000.nii.gz"
        image = read_volume(path)
        assert image.spacing_zyx == spacing
        labels = predict_file(model, path, tmp_path / f"{cid}.nii.gz")
        written = read_labels(tmp_path / f"{cid}.nii.gz", reference=image)
        assert written.same_grid(image) and np.array_equal(written.array, labels.array)
        same, uncertainty, score, _ = predict_with_uncertainty(model, image)
        assert np.array_equal(same.array, labels.array)
        assert uncertainty.shape == image.shape and uncertainty.dtype == np.float16 and 0.0 <= score <= 1.0


def test_cases_load_on_the_target_grid_with_tokens_computed_there(mixed_dir):
    from dinomix_core.models.teacher import build_teacher

    teacher = build_teacher("vit_small_patch16_dinov3", weights="random", **TINY_TEACHER)
    spec = CaseSpec("mix_001", mixed_dir / "imagesTr" / "mix_001_0000.nii.gz", mixed_dir / "labelsTr" / "mix_001.nii.gz")
    (case,) = load_cases([spec], labelmap=phantom_labelmap(), teacher=teacher, stride=8, target_spacing=SMALL)
    shape = resampled_size((48, 48, 48), MEDIUM, SMALL)
    assert case.spacing_zyx == SMALL and case.image.shape == shape == case.label.shape == (24, 24, 24)
    assert case.tokens.shape[0] == shape[0] and case.tokens.shape[2:] == token_grid(shape[1:], 8)
    original = read_labels(spec.label_path)
    # Nearest-neighbour labels: no class is invented, the big organs keep their volume (mL) closely.
    assert set(np.unique(case.label)) <= set(np.unique(original.array))
    ml = lambda arr, sp, v: (arr == v).sum() * np.prod(sp) / 1000.0  # noqa: E731
    big = np.bincount(original.array.ravel())[1:].argmax() + 1
    assert ml(case.label, SMALL, big) == pytest.approx(ml(original.array, MEDIUM, big), rel=0.15)


def test_explicit_spacing_is_recorded(mixed_dir, tmp_path):
    cfg = TrainConfig(method="supervised", steps=1, checkpoint_every=0, target_spacing=(6.0, 6.0, 6.0), **TINY)
    result = train_on_dataset(cfg, mixed_dir, "mix_000,mix_001", tmp_path / "run")
    assert LoadedModel(result.model_path, device="cpu").target_spacing == (6.0, 6.0, 6.0)


# ---- orientation: same prediction in world space whatever the storage order ---------------------


def _model(tmp_path, spacing, *, orientation=True) -> LoadedModel:
    """A random tiny student saved as model.pt (its weights do not matter: equality is exact)."""
    labelmap = LabelMap.from_dataset_json({"labels": {"background": 0, "a": 1, "b": 2}})
    cfg = TrainConfig(method="supervised", **{**TINY, "patch_size": (16, 32, 32)})
    torch.manual_seed(0)
    student = create_student("unet3d", num_classes=3, in_channels=1, width=4, depth=2, norm="instance")
    meta = model_meta(cfg, student, labelmap, TeacherInfo(), 0, spacing_zyx=spacing)
    if not orientation:  # a checkpoint from before spacing and orientation were recorded
        meta["preprocessing"] = {k: v for k, v in meta["preprocessing"].items() if k in ("clip_hu", "window")}
    path = tmp_path / f"model-{spacing}-{orientation}.pt"
    save_checkpoint(path, kind=MODEL_KIND, meta=meta, tensors={"state_dict": student.state_dict()})
    return LoadedModel(path, device="cpu")


@pytest.fixture(scope="module")
def real_crop(real_ct_dir):
    """A 20 x 40 x 40 voxel (3 mm) block of the shared real CT, body and air, stored RAS as the file is."""
    ct = read_volume(real_ct_dir / "ct.nii.gz")
    return Volume.from_sitk(ct.to_sitk()[30:70, 20:60, 50:70], modality="CT")


@pytest.mark.parametrize("spacing", [(3.0, 3.0, 3.0), (4.0, 4.5, 4.5)])
def test_flipped_and_permuted_real_ct_gives_the_same_prediction_in_world_space(tmp_path, real_crop, spacing):
    model = _model(tmp_path, spacing)
    stored = Volume.from_sitk(sitk.DICOMOrient(real_crop.to_sitk(), "PIR"), modality="CT")  # sagittal-first, flipped
    assert stored.shape != real_crop.shape and not np.allclose(stored.direction, real_crop.direction)
    a, ua, sa, _ = predict_with_uncertainty(model, real_crop)
    b, ub, sb, _ = predict_with_uncertainty(model, stored)
    assert a.same_grid(real_crop) and b.same_grid(stored) and ub.shape == stored.shape
    assert a.array.any() and (a.array == 0).any()  # a real mix of classes, not a constant
    assert np.array_equal(to_canonical(a)[0].array, to_canonical(b)[0].array)
    assert np.array_equal(to_canonical(real_crop.with_array(ua))[0].array, to_canonical(stored.with_array(ub))[0].array)
    assert sa == pytest.approx(sb)
    plain = model.predict(stored)
    # The labels-only path (engine/_regrid_labels.py) interpolates border voxels in another
    # order of float operations than the uncertainty path's grid_sample: this random network's
    # near-tied classes may round the other way in a few voxels, nowhere else.
    differ = plain.array != b.array
    assert differ.mean() <= 0.001, f"{int(differ.sum())} of {differ.size} voxels differ"


def test_the_network_sees_lps_so_a_flip_on_disk_does_not_mirror_the_prediction(tmp_path, real_crop):
    """Without canonical orientation (an old checkpoint) the flipped file is predicted mirrored: the check bites."""
    old = _model(tmp_path, None, orientation=False)
    assert old.target_spacing is None and not old.reorient
    stored = Volume.from_sitk(sitk.DICOMOrient(real_crop.to_sitk(), "LPS"), modality="CT")  # y and x flipped
    a, b = old.predict(real_crop), old.predict(stored)
    assert not np.array_equal(to_canonical(a)[0].array, to_canonical(b)[0].array)
    # ... and an old checkpoint predicts exactly as before: on the input's own grid, nothing resampled.
    direct = predict_volume(old.model, stored, preprocess=old.preprocess, window=old.window,
                            **old.inference.options(), device="cpu")
    assert np.array_equal(b.array, direct.array)


def test_predict_job_returns_labels_and_uncertainty_on_the_file_grid(tmp_path, real_crop):
    model = _model(tmp_path, (4.0, 4.5, 4.5))
    path = tmp_path / "pir.nii.gz"
    write_image(Volume.from_sitk(sitk.DICOMOrient(real_crop.to_sitk(), "PIR")), path)
    result = run_predict_job(PredictJobSpec(checkpoint=str(model.path), image_path=str(path), device="cpu"))
    image = read_volume(path)
    assert result.labels.same_grid(image) and result.uncertainty.shape == image.shape
