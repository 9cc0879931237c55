"""The training recipes in one place, the learning rate per optimizer, its schedule, and old
configs that carry fields since removed (``log_every``, ``extra``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dinomix_core.engine.config import DEFAULT_LR, TrainConfig
from dinomix_core.engine.presets import PRESETS, preset_config, preset_fields
from dinomix_core.engine.schedules import learning_rate


def test_lr_default_follows_the_optimizer_unless_given():
    assert TrainConfig().lr == 0.03 == DEFAULT_LR["sgd"]
    assert TrainConfig(optimizer="adamw").lr == 3e-3 == DEFAULT_LR["adamw"]
    assert TrainConfig(optimizer="adamw", lr=0.01).lr == 0.01
    # the recorded config names the rate that ran, so reloading it keeps that rate
    saved = TrainConfig(optimizer="adamw").to_dict()
    assert saved["lr"] == 3e-3 and TrainConfig.from_dict(saved).lr == 3e-3


def test_an_old_config_with_removed_fields_still_loads():
    old = TrainConfig(optimizer="adamw", steps=7).to_dict()
    old.update(log_every=10, extra={"note": "from an older version"})
    loaded = TrainConfig.from_dict(json.loads(json.dumps(old)))
    assert loaded.steps == 7 and loaded.optimizer == "adamw"
    assert not hasattr(loaded, "log_every") and not hasattr(loaded, "extra")
    with pytest.raises(TypeError):  # a new config cannot set them: they do nothing
        TrainConfig(log_every=10)


def test_quick_preset_is_a_valid_config_and_copies_are_independent():
    config = preset_config("quick")
    config.validate()
    assert {k: getattr(config, k) for k in PRESETS["quick"]} == {
        k: tuple(v) if isinstance(v, list) else v for k, v in PRESETS["quick"].items()}
    fields = preset_fields("quick", steps=3)
    fields["patch_size"] = (1, 1, 1)
    assert PRESETS["quick"]["steps"] != 3 and PRESETS["quick"]["patch_size"] != (1, 1, 1)
    with pytest.raises(KeyError, match="quick"):
        preset_fields("fastest")


def test_schedules_warm_up_then_decay_to_zero():
    base = 0.01
    assert learning_rate(base, 0.0, "poly") == base
    assert learning_rate(base, 1.0, "poly") == 0.0 and learning_rate(base, 1.0, "cosine") == pytest.approx(0.0)
    # linear warm-up over the first 10%, the peak at its end, never exactly 0 at the start
    assert 0 < learning_rate(base, 0.0, "cosine", 0.1) < base / 100
    assert learning_rate(base, 0.05, "cosine", 0.1) == pytest.approx(base / 2)
    assert learning_rate(base, 0.1, "cosine", 0.1) == pytest.approx(base)
    # half cosine after it: half the rate midway through the rest, monotone down
    assert learning_rate(base, 0.55, "cosine", 0.1) == pytest.approx(base / 2)
    rates = [learning_rate(base, t, "cosine", 0.1) for t in np.linspace(0.1, 1.0, 50)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    assert learning_rate(base, 0.5, "poly") == pytest.approx(base * 0.5 ** 0.9)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="warmup"):
        TrainConfig(warmup_fraction=1.0)


def test_trainer_applies_the_configured_schedule(phantom_dir, tmp_path):
    """The rate the optimizer used at each step is the schedule's (warm-up, then cosine)."""
    from dinomix_core.data.dataset import load_cases, load_nnunet_dataset
    from dinomix_core.engine.trainer import Trainer

    cases, labelmap, _ = load_nnunet_dataset(phantom_dir)
    labeled = load_cases(cases[:1], labelmap=labelmap)
    config = TrainConfig(method="supervised", student_width=4, student_depth=2, patch_size=(8, 32, 32), steps=4,
                         optimizer="adamw", lr_schedule="cosine", warmup_fraction=0.5, batch_labeled=1,
                         checkpoint_every=0, augment=False)
    torch.set_num_threads(1)
    result = Trainer(config, labeled, [], labelmap, out_dir=tmp_path).fit()
    used = [h["lr"] for h in result.history]
    expected = [learning_rate(3e-3, s / 4, "cosine", 0.5) for s in range(4)]
    assert used == pytest.approx(expected) and used[2] == pytest.approx(3e-3)
    assert math.isclose(max(used), 3e-3)


def test_patch_class_weighting_reaches_the_sampler(phantom_dir, tmp_path):
    from dinomix_core.data.dataset import load_cases, load_nnunet_dataset
    from dinomix_core.engine.trainer import Trainer

    with pytest.raises(ValueError, match="patch_class_weighting"):
        TrainConfig(patch_class_weighting="rarest")
    cases, labelmap, _ = load_nnunet_dataset(phantom_dir)
    labeled = load_cases(cases[:1], labelmap=labelmap)
    config = TrainConfig(method="supervised", student_width=4, student_depth=2, patch_size=(8, 32, 32), steps=1,
                         patch_class_weighting="inverse-frequency")
    sampler = Trainer(config, labeled, [], labelmap, out_dir=tmp_path).batches.sampler
    probs = sampler.class_probabilities(labeled[0])
    counts = {c: int((labeled[0].label == c).sum()) for c in probs}
    rarest, commonest = min(counts, key=counts.get), max(counts, key=counts.get)
    assert probs[rarest] / probs[commonest] == pytest.approx(counts[commonest] / counts[rarest])
