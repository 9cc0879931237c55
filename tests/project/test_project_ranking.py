"""Uncertainty score and next-scan ranking (active learning)."""

from __future__ import annotations

import numpy as np
import pytest
from _project_fakes import organ_labels, write_image

from dinomix_core.project import Project, tail_class_weights, uncertainty_score, uncertainty_summary

BINARY_ENTROPY_04 = 0.9709505944546686  # H(0.4, 0.6) in bits


def _probs(pred: np.ndarray, num_classes: int, confidence: dict[int, float]) -> np.ndarray:
    """Softmax volume (C, z, y, x): each voxel puts ``confidence[c]`` on its class c, the rest spread."""
    probs = np.zeros((num_classes, *pred.shape), np.float32)
    for c in range(num_classes):
        mask = pred == c
        top = confidence.get(c, 1.0)
        probs[:, mask] = (1.0 - top) / (num_classes - 1)
        probs[c, mask] = top
    return probs


def test_certain_prediction_scores_zero_and_binary_case_matches_known_entropy():
    pred = np.zeros((2, 4, 4), np.int64)
    pred[:, 1:3, 1:3] = 1
    assert uncertainty_score(_probs(pred, 2, {})) == pytest.approx(0.0, abs=1e-6)
    assert uncertainty_score(_probs(pred, 2, {1: 0.6})) == pytest.approx(BINARY_ENTROPY_04, abs=1e-5)


def test_background_uncertainty_does_not_count():
    pred = np.zeros((2, 8, 8), np.int64)
    pred[0, :2, :2] = 1
    quiet = uncertainty_score(_probs(pred, 2, {1: 0.6, 0: 1.0}))
    noisy = uncertainty_score(_probs(pred, 2, {1: 0.6, 0: 0.55}))  # 252 unsure background voxels
    assert quiet == pytest.approx(noisy, abs=1e-6) == pytest.approx(BINARY_ENTROPY_04, abs=1e-5)


def test_small_uncertain_organ_drives_the_score_more_with_tail_weights():
    pred = np.zeros((4, 16, 16), np.int64)
    pred[:, :8, :] = 1  # a big, certain organ (512 voxels)
    pred[0, 15, 14:16] = 2  # a tiny, uncertain one (2 voxels)
    probs = _probs(pred, 3, {1: 0.99, 2: 0.4})
    per_class = uncertainty_summary(probs)[1]
    voxel_mean = (512 * per_class[1] + 2 * per_class[2]) / 514
    uniform = uncertainty_score(probs)
    tail = uncertainty_score(probs, tail_class_weights([10_000, 512, 2]))
    assert uniform == pytest.approx((per_class[1] + per_class[2]) / 2)
    assert voxel_mean < uniform < tail < per_class[2]


def test_no_predicted_foreground_falls_back_to_volume_entropy():
    pred = np.zeros((2, 4, 4), np.int64)
    assert uncertainty_score(_probs(pred, 2, {0: 0.6})) == pytest.approx(BINARY_ENTROPY_04, abs=1e-5)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match=r"\(C, z, y, x\)"):
        uncertainty_score(np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError, match="one weight per class"):
        uncertainty_score(np.full((3, 2, 2, 2), 1 / 3, np.float32), [1.0, 2.0])


def test_tail_weights_favour_rare_and_unseen_classes():
    w = tail_class_weights([1_000_000, 40_000, 700, 0], beta=0.5)
    assert w[0] == 0.0
    assert w[1] < w[2] <= w[3]
    assert np.mean(w[1:]) == pytest.approx(1.0)


def test_next_before_any_run_is_random_but_reproducible(project, tmp_path):
    for i in range(3, 9):
        write_image(tmp_path / "more" / f"liver_{i:03d}_0000.nii.gz", seed=i)
    project.add_images([tmp_path / "more"])
    project.save_labels("liver_000", organ_labels())
    first = project.next_cases(n=10)
    assert len(first) == 8 and "liver_000" not in [r["id"] for r in first]
    assert all(r["score"] is None and "random" in r["reason"] for r in first)
    assert [r["rank"] for r in first] == list(range(1, 9))
    with Project.open(project.root) as again:
        assert [r["id"] for r in again.next_cases(n=10)] == [r["id"] for r in first]
    orders = {tuple(r["id"] for r in project.next_cases(n=10, seed=s)) for s in range(5)}
    assert len(orders) > 1  # the seed matters
    assert project.next_cases(n=10, seed=3) == project.next_cases(n=10, seed=3)
    assert len(project.next_cases(n=2)) == 2


def test_next_after_a_run_ranks_by_uncertainty_then_unscored(project, tmp_path):
    write_image(tmp_path / "more" / "liver_009_0000.nii.gz", seed=9)
    project.add_images([tmp_path / "more"])
    project.save_labels("liver_000", organ_labels())
    run = project.start_run({}, "dinomix", "random")
    project.add_prediction(run, "liver_001", organ_labels(1), 0.2, {6: 0.1})
    project.add_prediction(run, "liver_002", organ_labels(2), 0.7, {11: 0.9})
    project.finish_run(run, "completed", {})
    ranked = project.next_cases(n=5)
    assert [r["id"] for r in ranked] == ["liver_002", "liver_001", "liver_009"]
    assert ranked[0]["score"] == 0.7 and ranked[0]["run"] == run
    assert ranked[0]["class_uncertainty"] == {"pancreas": 0.9}
    assert ranked[2]["score"] is None
    # A newer run that is still running does not replace the completed run's ranking.
    newer = project.start_run({}, "dinomix", "random")
    project.add_prediction(newer, "liver_001", organ_labels(1), 0.99)
    assert [r["id"] for r in project.next_cases(n=2)] == ["liver_002", "liver_001"]
