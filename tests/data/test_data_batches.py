"""Training batches: shapes, determinism per (seed, rank, step), resume, prefetch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _data_fakes import coordinate_tokens, make_case, synthetic_ct
from dinomix_core.data.batches import TrainBatches
from dinomix_core.data.patches import PatchSampler
from dinomix_core.data.preprocess import student_intensity

PATCH = (8, 16, 16)
STRIDE = 8


def _cases(n, *, labeled, seed0=0, tokens=True):
    cases = []
    for i in range(n):
        hu, label = synthetic_ct((12, 24, 32), seed=seed0 + i)
        toks = coordinate_tokens(hu.shape, STRIDE) if tokens else None
        cases.append(make_case(f"{'L' if labeled else 'U'}{i}", student_intensity(hu), label if labeled else None, toks))
    return cases


def _batches(**kwargs):
    options = dict(batch_labeled=2, batch_unlabeled=3, seed=11)
    options.update(kwargs)
    return TrainBatches(_cases(2, labeled=True), _cases(3, labeled=False, seed0=10),
                        PatchSampler(PATCH, stride=STRIDE), **options)


def _equal(a: dict, b: dict) -> bool:
    for part in ("labeled", "unlabeled"):
        for key, value in a[part].items():
            other = b[part][key]
            if torch.is_tensor(value):
                if not torch.equal(value, other):
                    return False
            elif value != other:
                return False
    return True


def test_batch_shapes_and_types():
    batch = _batches().batch_at(0)
    lab, unl = batch["labeled"], batch["unlabeled"]
    assert lab["image"].shape == (2, 1, *PATCH) and lab["image"].dtype == torch.float32
    assert lab["label"].shape == (2, *PATCH) and lab["label"].dtype == torch.int64
    assert lab["tokens"].shape == (2, 4, PATCH[0], PATCH[1] // STRIDE, PATCH[2] // STRIDE)
    assert unl["image"].shape == (3, 1, *PATCH) and unl["tokens"].shape[0] == 3
    assert "label" not in unl
    assert all(cid.startswith("L") for cid in lab["case_ids"]) and all(cid.startswith("U") for cid in unl["case_ids"])


def test_same_seed_and_step_give_the_same_batch():
    a, b = _batches(), _batches()
    assert _equal(a.batch_at(5), b.batch_at(5))
    assert _equal(a.batch_at(5), a.batch_at(5))
    assert not _equal(a.batch_at(5), a.batch_at(6))
    assert not _equal(a.batch_at(5), _batches(seed=12).batch_at(5))


def test_ranks_draw_different_patches():
    r0 = _batches(rank=0, world_size=2)
    r1 = _batches(rank=1, world_size=2)
    assert not _equal(r0.batch_at(3), r1.batch_at(3))
    with pytest.raises(ValueError):
        _batches(rank=2, world_size=2)


def test_iteration_and_resume_reproduce_batch_at():
    source = _batches()
    seq = [next(source) for _ in range(4)]
    for step, batch in enumerate(seq):
        assert batch["step"] == step and _equal(batch, source.batch_at(step))
    resumed = _batches(start_step=2)
    assert _equal(next(resumed), seq[2])
    resumed.seek(1)
    assert _equal(next(resumed), seq[1])


def test_prefetch_thread_gives_the_same_sequence():
    plain = _batches()
    ahead = _batches(prefetch=2)
    try:
        for _ in range(4):
            assert _equal(next(plain), next(ahead))
        ahead.seek(0)
        assert _equal(next(ahead), plain.batch_at(0))
    finally:
        ahead.close()
    assert ahead._worker is None


def test_without_augmentation_patches_are_raw_crops():
    batches = _batches(augment=False)
    batch = batches.batch_at(2)["labeled"]
    for i, (cid, (z0, y0, x0)) in enumerate(zip(batch["case_ids"], batch["origins"])):
        case = next(c for c in batches.labeled_cases if c.case_id == cid)
        expected = case.image[z0:z0 + PATCH[0], y0:y0 + PATCH[1], x0:x0 + PATCH[2]]
        np.testing.assert_array_equal(batch["image"][i, 0, :expected.shape[0], :expected.shape[1], :expected.shape[2]].numpy(), expected)


def test_supervised_only_and_tokenless_batches():
    batches = TrainBatches(_cases(2, labeled=True, tokens=False), [], PatchSampler(PATCH, stride=STRIDE), seed=0)
    batch = batches.batch_at(0)
    assert batch["unlabeled"] is None and batch["labeled"]["tokens"] is None


def test_inconsistent_inputs_are_rejected():
    with pytest.raises(ValueError, match="labeled"):
        TrainBatches([], _cases(1, labeled=False), PatchSampler(PATCH, stride=STRIDE))
    with pytest.raises(ValueError, match="tokens"):
        TrainBatches(_cases(1, labeled=True), _cases(1, labeled=False, tokens=False), PatchSampler(PATCH, stride=STRIDE))
    with pytest.raises(ValueError, match="without a label"):
        TrainBatches(_cases(1, labeled=False), [], PatchSampler(PATCH, stride=STRIDE))
