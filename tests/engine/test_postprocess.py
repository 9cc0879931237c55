"""Mask clean-up: largest connected component or the large pieces per organ, decided on
validation, kept in model.pt."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from dinomix_core.engine.config import TrainConfig
from dinomix_core.engine.pipeline import LoadedModel, train_on_dataset
from dinomix_core.engine.postprocess import (PIECE_FRACTION, RULE, CleanUpPlan, PostProcessing, decide,
                                             keep_large_components, keep_largest_component, plan_for)
from dinomix_core.io import read_volume

from _engine_settings import TINY

SPACING = (2.0, 1.0, 1.0)


def _components(mask: np.ndarray) -> int:
    return ndimage.label(mask, structure=np.ones((3, 3, 3), bool))[1]


def _organs() -> np.ndarray:
    """(z, y, x) ground truth: organ 1 a block, organ 2 a block, organ 3 two separate blocks."""
    gt = np.zeros((12, 40, 40), np.uint8)
    gt[2:10, 5:20, 5:20] = 1
    gt[2:10, 25:35, 25:35] = 2
    gt[2:5, 25:30, 3:8] = 3
    gt[7:10, 33:38, 3:8] = 3
    return gt


def test_keeps_the_largest_piece_of_the_chosen_classes_only():
    labels = _organs()
    labels[0, 0, 30] = 1  # an island of organ 1
    labels[11, 39, 39] = 2  # an island of organ 2
    out = keep_largest_component(labels.copy(), [1])
    assert _components(out == 1) == 1 and out[0, 0, 30] == 0  # the island became background
    assert out[11, 39, 39] == 2  # organ 2 not chosen: untouched
    expected = labels.copy()
    expected[0, 0, 30] = 0
    assert np.array_equal(out, expected)


def test_a_corner_touch_is_one_piece():
    """26-connectivity: a thin oblique vessel must not be cut into voxels."""
    labels = np.zeros((6, 6, 6), np.uint8)
    for i in range(6):
        labels[i, i, i] = 4
    assert np.array_equal(keep_largest_component(labels.copy(), [4]), labels)


def test_decide_turns_clean_up_on_where_islands_hurt_and_off_where_the_organ_has_two_pieces():
    gt = _organs()
    pred = gt.copy()
    pred[0:2, 0:12, 26:40] = 1  # a false island of organ 1, far from it
    pred[10:12, 36:40, 36:40] = 2  # and of organ 2
    pp = decide([pred], [gt], [SPACING], 4, decided_on="held-out validation cases", names={1: "a", 2: "b", 3: "c"})
    assert pp.keep_largest == (1, 2)  # organ 3 is two objects: keeping one piece halves its Dice
    assert pp.keep_large == (3,)  # ... and keeping both large pieces costs nothing
    assert pp.rule == RULE
    assert pp.evidence["a"]["dice_largest"] == pytest.approx(100.0) and pp.evidence["a"]["dice_raw"] < 99.5
    assert pp.evidence["c"]["dice_largest"] < pp.evidence["c"]["dice_raw"]
    assert pp.evidence["a"]["hd95_largest_mm"] < pp.evidence["a"]["hd95_raw_mm"]
    assert pp.decided_on == "held-out validation cases" and pp.cases == 1
    assert "a, b" in pp.summary({1: "a", 2: "b", 3: "c"})


def test_keep_large_components_drops_specks_and_keeps_the_large_pieces():
    labels = np.zeros((10, 40, 40), np.uint8)
    labels[1:9, 2:17, 2:17] = 1  # 1,800 voxels
    labels[1:5, 25:35, 2:10] = 1  # 320 voxels: a second large piece (18% of the largest)
    labels[8, 37:39, 37:39] = 1  # 4 voxels: a speck
    labels[0:2, 30:32, 30:32] = 2  # another class's speck, not chosen
    out = keep_large_components(labels.copy(), [1])
    assert PIECE_FRACTION == pytest.approx(0.1)
    assert out[8, 37, 37] == 0 and out[2, 30, 5] == 1 and out[4, 10, 10] == 1
    assert _components(out == 1) == 2 and out[0, 30, 30] == 2
    both = CleanUpPlan(largest=(2,), large=(1,)).apply(labels.copy())
    assert np.array_equal(both, out)  # class 2's single piece is its largest
    assert not CleanUpPlan() and CleanUpPlan(large=(1,))


def test_decide_keeps_the_large_pieces_of_an_organ_predicted_in_two_and_drops_its_specks():
    gt = np.zeros((12, 40, 40), np.uint8)
    gt[2:10, 5:20, 5:20] = 1
    gt[2:6, 24:34, 5:12] = 1  # a lobe that the slices cut off from the rest
    pred = gt.copy()
    pred[11, 38:40, 38:40] = 1  # a speck far away
    pp = decide([pred], [gt], [SPACING], 2, decided_on="held-out validation cases", names={1: "liver"})
    ev = pp.evidence["liver"]
    assert pp.keep_largest == () and pp.keep_large == (1,)
    assert ev["dice_large_pieces"] == pytest.approx(100.0) and ev["dice_largest"] < ev["dice_raw"] < 100.0
    assert ev["hd95_large_pieces_mm"] <= ev["hd95_raw_mm"]
    assert "10%+ of the largest kept for liver" in pp.summary({1: "liver"})


def test_record_round_trips_and_old_checkpoints_mean_not_decided():
    pp = PostProcessing((1, 3), "labeled training cases", 2, {"a": {"dice_raw": 1.0}}, (4,))
    assert PostProcessing.from_dict(pp.to_dict()) == pp
    old = PostProcessing.from_dict(None)
    assert old.decided_on is None and not plan_for("auto", old, 5)
    assert plan_for("largest", old, 5) == CleanUpPlan(largest=(1, 2, 3, 4))
    assert not plan_for("off", pp, 5) and plan_for("auto", pp, 5) == CleanUpPlan((1, 3), (4,))
    # A checkpoint decided before the large-pieces option keeps its decision and says by which rule.
    before = PostProcessing.from_dict({"keep_largest": [1, 3], "decided_on": "labeled training cases", "cases": 2})
    assert plan_for("auto", before, 5) == CleanUpPlan((1, 3), ()) and before.rule == "largest or off"
    with pytest.raises(ValueError, match="postprocess must be one of"):
        plan_for("biggest", pp, 5)


@pytest.fixture(scope="module")
def trained(phantom_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pp") / "run"
    cfg = TrainConfig(method="supervised", steps=30, checkpoint_every=0, lr=0.05, **{**TINY, "student_width": 8})
    return train_on_dataset(cfg, phantom_dir, 2, out, exclude=["phantom_003"])


def test_training_records_the_decision_and_predict_applies_it(trained, phantom_dir):
    image = read_volume(phantom_dir / "imagesTr" / "phantom_003_0000.nii.gz")
    auto = LoadedModel(trained.model_path, device="cpu")
    record = auto.meta["postprocessing"]
    # No validation cases were given: decided on the labeled cases, and the record says so.
    assert record["decided_on"] == "labeled training cases" and record["cases"] == 2
    assert record["evidence"], "every class present in the labeled cases has its evidence"
    raw = LoadedModel(trained.model_path, device="cpu", postprocess="off").predict(image).array
    every = LoadedModel(trained.model_path, device="cpu", postprocess="largest").predict(image).array
    chosen, large = set(record["keep_largest"]), set(record["keep_large"])
    assert record["rule"] == RULE and not chosen & large
    cleaned = auto.predict(image).array
    for c in range(1, auto.labelmap.num_classes):
        assert _components(every == c) <= 1
        if c in chosen | large:
            assert np.all(raw[cleaned == c] == c)  # only removals, never additions
        if c in chosen:
            assert _components(cleaned == c) <= 1
        elif c in large:
            sizes = np.bincount(ndimage.label(cleaned == c, structure=np.ones((3, 3, 3), bool))[0].ravel())[1:]
            assert sizes.size == 0 or sizes.min() >= PIECE_FRACTION * sizes.max()
        else:
            assert np.array_equal(cleaned == c, raw == c)
    assert np.count_nonzero(every) <= np.count_nonzero(raw)
    assert any(_components(raw == c) > 1 for c in range(1, auto.labelmap.num_classes)), \
        "a 30-step model leaves islands: the test would not see the clean-up otherwise"
