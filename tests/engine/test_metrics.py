"""Metrics against hand-computed cases, an independent brute-force reference, and MONAI."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from dinomix_core.engine.metrics import (
    ABSENT,
    FALSE_POSITIVE,
    MISSED,
    PRESENT,
    aggregate,
    binary_scores,
    evaluate_arrays,
    hd95_from_distances,
    score_case,
    surface_mask,
)


def _cube(shape, lo, size):
    m = np.zeros(shape, dtype=bool)
    m[lo[0] : lo[0] + size, lo[1] : lo[1] + size, lo[2] : lo[2] + size] = True
    return m


def test_two_cubes_offset_by_one_slice_anisotropic_spacing():
    # A = 3x3x3 cube at z 2..4, B = the same cube at z 3..5; spacing (z, y, x) = (2, 1, 1) mm.
    # Dice: overlap 2x3x3 = 18 voxels -> 2*18 / (27 + 27) = 2/3.
    # Surfaces (face connectivity): all 26 voxels but the centre of each cube.
    # A -> B: A's bottom layer z=2 (9 voxels) is one slice from B's bottom face: 2 mm each;
    #   A's z=3 ring (8) lies on B's bottom face: 0; A's top face z=4: its 8 ring voxels lie on
    #   B's middle ring: 0, its centre (4,3,3) is B's centre, nearest B surface voxel 1 mm away
    #   in-plane. So 16 x 0, 1 x 1 mm, 9 x 2 mm. B -> A is the mirror image.
    # HD95 = 95th percentile of [0]*16 + [1] + [2]*9 (linear interp., index 23.75) = 2 mm.
    # ASD = (9*2 + 1) * 2 / (26 + 26) = 38 / 52 mm.
    a = _cube((8, 8, 8), (2, 2, 2), 3)
    b = _cube((8, 8, 8), (3, 2, 2), 3)
    s = binary_scores(a, b, (2.0, 1.0, 1.0))
    assert s.status == PRESENT
    assert s.dice == pytest.approx(2.0 / 3.0)
    assert s.hd95_mm == pytest.approx(2.0)
    assert s.asd_mm == pytest.approx(38.0 / 52.0)
    assert (s.gt_voxels, s.pred_voxels) == (27, 27)
    # The same offset along x (1 mm spacing) halves every non-zero distance.
    c = _cube((8, 8, 8), (2, 2, 3), 3)
    s_x = binary_scores(a, c, (2.0, 1.0, 1.0))
    assert s_x.hd95_mm == pytest.approx(1.0)
    # Centre voxel of the top face: nearest surface now 1 mm in x -> still 1 mm: (9*1 + 1) * 2 / 52.
    assert s_x.asd_mm == pytest.approx(20.0 / 52.0)


def test_single_voxels():
    a = np.zeros((5, 5, 5), dtype=bool)
    a[2, 2, 2] = True
    same = binary_scores(a, a.copy(), (3.0, 0.8, 0.8))
    assert (same.dice, same.hd95_mm, same.asd_mm) == (1.0, 0.0, 0.0)
    b = np.zeros_like(a)
    b[3, 2, 2] = True  # one slice higher: 3 mm apart, no overlap
    moved = binary_scores(a, b, (3.0, 0.8, 0.8))
    assert moved.status == PRESENT
    assert moved.dice == 0.0
    assert moved.hd95_mm == pytest.approx(3.0)
    assert moved.asd_mm == pytest.approx(3.0)


def test_empty_masks_have_explicit_statuses():
    empty = np.zeros((4, 4, 4), dtype=bool)
    blob = _cube((4, 4, 4), (1, 1, 1), 2)
    both = binary_scores(empty, empty, (1, 1, 1))
    assert both.status == ABSENT and both.dice is None and both.hd95_mm is None
    fp = binary_scores(blob, empty, (1, 1, 1))
    assert fp.status == FALSE_POSITIVE and fp.dice == 0.0 and fp.hd95_mm is None and fp.asd_mm is None
    missed = binary_scores(empty, blob, (1, 1, 1))
    assert missed.status == MISSED and missed.dice == 0.0 and missed.hd95_mm is None and missed.asd_mm is None
    assert (missed.gt_voxels, missed.pred_voxels) == (8, 0)


def test_surface_connectivity_choice():
    # A 3x3x3 cube missing one corner: the centre voxel keeps all 6 face neighbours (interior
    # with connectivity 1) but touches the missing corner diagonally (surface with 3).
    m = np.zeros((5, 5, 5), dtype=bool)
    m[1:4, 1:4, 1:4] = True
    m[1, 1, 1] = False
    assert not surface_mask(m, connectivity=1)[2, 2, 2]
    assert surface_mask(m, connectivity=3)[2, 2, 2]
    # The array border counts as outside: a mask filling the volume is all surface but its core.
    full = np.ones((3, 3, 3), dtype=bool)
    assert surface_mask(full).sum() == 26


def test_hd95_is_max_of_directed_percentiles_not_pooled():
    # 9 of 10 ground-truth surface voxels are on the prediction, one is 10 mm away; all 100
    # prediction surface voxels are on the ground truth. Directed 95th percentiles: 0 and
    # 0 + 0.55 * 10 = 5.5 (index 0.95 * 9 = 8.55). Pooling the 110 distances would give 0.
    d_pg = np.zeros(100)
    d_gp = np.array([0.0] * 9 + [10.0])
    assert hd95_from_distances(d_pg, d_gp) == pytest.approx(5.5)
    assert np.percentile(np.concatenate([d_pg, d_gp]), 95) == 0.0


def _brute_surface(mask):
    """Face-connectivity surface by explicit neighbour shifts (independent of scipy erosion)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = np.ones_like(mask)
    for axis, step in itertools.product(range(3), (-1, 1)):
        interior &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
    return mask & ~interior


def _brute_distances(a, b, spacing):
    pa = np.argwhere(_brute_surface(a)) * spacing
    pb = np.argwhere(_brute_surface(b)) * spacing
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return d.min(axis=1), d.min(axis=0)


def test_matches_brute_force_reference_including_border_contact():
    rng = np.random.default_rng(4)
    spacing = np.array([2.5, 0.7, 1.3])
    for _ in range(4):
        a = rng.random((6, 9, 8)) < 0.35
        b = rng.random((6, 9, 8)) < 0.35  # scattered voxels touching the array border
        s = binary_scores(a, b, tuple(spacing))
        d_ab, d_ba = _brute_distances(a, b, spacing)
        expected_hd = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
        expected_asd = (d_ab.sum() + d_ba.sum()) / (len(d_ab) + len(d_ba))
        assert s.hd95_mm == pytest.approx(expected_hd)
        assert s.asd_mm == pytest.approx(expected_asd)
        assert s.dice == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_agrees_with_monai_on_smooth_blobs():
    monai_metrics = pytest.importorskip("monai.metrics")
    torch = pytest.importorskip("torch")
    from scipy import ndimage

    rng = np.random.default_rng(0)
    f = ndimage.gaussian_filter(rng.standard_normal((16, 24, 24)), 2)
    g = ndimage.gaussian_filter(rng.standard_normal((16, 24, 24)), 2)
    a, b = f > 0.05, (f + 0.3 * g) > 0.08
    for m in (a, b):  # keep the blobs off the border, where MONAI pads differently
        m[[0, -1]] = False
        m[:, [0, -1]] = False
        m[:, :, [0, -1]] = False
    spacing = (3.0, 0.8, 1.1)
    ours = binary_scores(a, b, spacing)
    pt = lambda m: torch.from_numpy(m[None, None].astype(np.float32))  # noqa: E731
    hd = monai_metrics.compute_hausdorff_distance(pt(a), pt(b), percentile=95, spacing=spacing).item()
    asd = monai_metrics.compute_average_surface_distance(pt(a), pt(b), symmetric=True, spacing=spacing).item()
    assert ours.hd95_mm == pytest.approx(hd, rel=1e-4)
    assert ours.asd_mm == pytest.approx(asd, rel=1e-4)


def test_score_case_multiclass_and_bad_input():
    gt = np.zeros((6, 8, 8), dtype=np.uint8)
    gt[1:3, 1:3, 1:3] = 1  # class 1: 8 voxels
    gt[4, 5, 5] = 2  # class 2: one voxel
    pred = gt.copy()
    pred[4, 5, 5] = 0  # class 2 missed
    pred[0, 7, 7] = 3  # class 3 only predicted
    scores = score_case(pred, gt, (1.0, 1.0, 1.0), num_classes=5)
    assert scores[1].status == PRESENT and scores[1].dice == 1.0
    assert scores[2].status == MISSED
    assert scores[3].status == FALSE_POSITIVE
    assert scores[4].status == ABSENT
    with pytest.raises(ValueError, match="outside the 3 classes"):
        score_case(pred, gt, (1, 1, 1), num_classes=3)
    with pytest.raises(ValueError, match="shape"):
        score_case(pred[:-1], gt, (1, 1, 1), num_classes=5)
    with pytest.raises(ValueError, match="integer"):
        score_case(pred.astype(np.float32), gt, (1, 1, 1), num_classes=5)


def test_aggregation_over_cases_then_classes_with_tail():
    names = ["background", "big", "mid", "tiny", "never"]
    shape = (6, 10, 10)
    gt1 = np.zeros(shape, np.uint8)
    gt1[0:4, 0:5, 0:5] = 1  # big: 100 voxels
    gt1[5, 0:3, 0:3] = 2  # mid: 9 voxels
    gt1[5, 8, 8] = 3  # tiny: 1 voxel
    pred1 = gt1.copy()
    pred1[0:2, 0:5, 0:5] = 0  # big: 50 of 100 predicted -> Dice 2*50/150 = 2/3
    pred1[5, 8, 8] = 0  # tiny missed -> Dice 0
    gt2 = np.zeros(shape, np.uint8)
    gt2[0:4, 0:5, 0:5] = 1  # case 2: big perfect; mid and tiny absent in ground truth
    pred2 = gt2.copy()
    pred2[5, 9, 9] = 2  # mid false positive -> Dice 0 for case 2
    report = evaluate_arrays([pred1, pred2], [gt1, gt2], (1.0, 1.0, 1.0), 5, class_names=names, tail_k=2,
                             case_ids=["a", "b"])
    pc = report["per_class"]
    assert pc["big"]["dice"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert pc["mid"]["dice"] == pytest.approx(50.0) and pc["mid"]["fp_cases"] == 1 and pc["mid"]["n_cases"] == 2
    assert pc["mid"]["hd95_mm"] == 0.0 and pc["mid"]["n_surface_cases"] == 1
    assert pc["tiny"]["dice"] == 0.0 and pc["tiny"]["missed_cases"] == 1 and pc["tiny"]["n_cases"] == 1
    assert pc["tiny"]["absent_cases"] == 1 and pc["tiny"]["hd95_mm"] is None
    assert pc["never"]["dice"] is None and pc["never"]["n_cases"] == 0  # absent everywhere: not scored
    assert report["mean_dice"] == pytest.approx((pc["big"]["dice"] + 50.0 + 0.0) / 3)
    # Tail by ground-truth voxels over both cases: tiny (1) < mid (9) < big (200).
    assert report["tail_classes"] == ["tiny", "mid"]
    assert report["tail_dice"] == pytest.approx(25.0)
    assert report["per_case"]["b"]["tiny"] == {
        "status": ABSENT, "dice": None, "hd95_mm": None, "asd_mm": None, "gt_voxels": 0, "pred_voxels": 0,
    }
    assert report["per_case"]["a"]["big"]["dice"] == pytest.approx(200 / 3)
    assert not any(isinstance(v, float) and math.isnan(v) for v in report["per_class"]["never"].values())


def test_aggregate_rejects_negative_tail_and_single_array_api():
    gt = np.zeros((3, 4, 4), np.uint8)
    gt[1, 1:3, 1:3] = 1
    report = evaluate_arrays(gt, gt, (2.0, 1.0, 1.0), 2)
    assert report["mean_dice"] == 100.0 and report["n_cases"] == 1 and report["tail_classes"] == ["class_1"]
    with pytest.raises(ValueError):
        aggregate({}, ["background", "x"], tail_k=-1)
