"""The training loop: every method trains, saves, emits events, cancels and resumes exactly."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dinomix_core.engine.config import METHODS, TrainConfig
from dinomix_core.engine.events import CancelToken, CheckpointEvent, StageEvent, StepEvent, TrainingCancelled
from dinomix_core.engine.pipeline import LoadedModel, predict_file, train_on_dataset
from dinomix_core.io import read_labels, read_volume

from _engine_settings import TINY, TINY_TEACHER

HELD_OUT = ["phantom_003"]


def _train(phantom_dir, out, method, steps, *, callbacks=(), cancel=None, resume=False, **overrides):
    cfg = TrainConfig(method=method, steps=steps, checkpoint_every=overrides.pop("checkpoint_every", 0), **{**TINY, **overrides})
    return train_on_dataset(
        cfg, phantom_dir, 2, out, exclude=HELD_OUT, teacher_weights="random", teacher_overrides=TINY_TEACHER,
        cache_dir=out.parent / "tokens", callbacks=list(callbacks), cancel=cancel, resume=resume,
    )


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_saves_and_predicts(phantom_dir, tmp_path, method):
    events = []
    result = _train(phantom_dir, tmp_path / "run", method, 2, callbacks=[events.append])
    assert [h["step"] for h in result.history] == [0, 1]
    last = result.history[-1]
    assert all(math.isfinite(v) for v in last.values())
    uses_unlabeled = method != "supervised"
    assert ("unl" in last) == uses_unlabeled
    assert ("fkd" in last) == (method in ("fkd", "dinomix"))
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [e.step for e in steps] == [1, 2] and steps[-1].eta_seconds == 0
    assert any(isinstance(e, StageEvent) and e.stage == "done" for e in events)

    run = json.loads(result.run_json.read_text())
    assert run["method"] == method and len(run["history"]) == 2
    if method in ("fkd", "dinomix"):
        assert "RANDOM TEACHER" in run["teacher_note"]
    else:
        assert run["teacher_note"] == "no foundation teacher used"

    model = LoadedModel(result.model_path, device="cpu")
    image_path = phantom_dir / "imagesTr" / "phantom_003_0000.nii.gz"
    labels = predict_file(model, image_path, tmp_path / "pred.nii.gz")
    image = read_volume(image_path)
    written = read_labels(tmp_path / "pred.nii.gz", reference=image)
    assert written.same_grid(image) and np.array_equal(written.array, labels.array)
    assert written.array.max() < model.labelmap.num_classes


def test_supervised_training_learns(phantom_dir, tmp_path):
    """Not a smoke test: 40 steps on the phantom must cut the loss clearly."""
    result = _train(phantom_dir, tmp_path / "run", "supervised", 40, lr=0.05, student_width=8)
    losses = [h["total"] for h in result.history]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_cancel_stops_between_steps_and_keeps_a_resumable_state(phantom_dir, tmp_path):
    cancel = CancelToken()

    def stop_after_two(event):
        if isinstance(event, StepEvent) and event.step == 2:
            cancel.cancel()

    with pytest.raises(TrainingCancelled):
        _train(phantom_dir, tmp_path / "run", "dinomix", 5, callbacks=[stop_after_two], cancel=cancel)
    assert (tmp_path / "run" / "last.pt").exists()
    assert not (tmp_path / "run" / "model.pt").exists()


def test_resume_continues_with_the_same_loss_curve(phantom_dir, tmp_path):
    straight = _train(phantom_dir, tmp_path / "straight", "dinomix", 6)

    cancel = CancelToken()
    saved = []

    def stop_after_three(event):
        if isinstance(event, CheckpointEvent):
            saved.append(event.step)
        if isinstance(event, StepEvent) and event.step == 3:
            cancel.cancel()

    with pytest.raises(TrainingCancelled):
        _train(phantom_dir, tmp_path / "resumed", "dinomix", 6, callbacks=[stop_after_three], cancel=cancel)
    assert saved == [3]
    resumed = _train(phantom_dir, tmp_path / "resumed", "dinomix", 6, resume=True)
    a = [h["total"] for h in straight.history]
    b = [h["total"] for h in resumed.history]
    assert len(b) == 6
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    sa = LoadedModel(straight.model_path, device="cpu").model.state_dict()
    sb = LoadedModel(resumed.model_path, device="cpu").model.state_dict()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=1e-4, atol=1e-5)


def test_resume_refuses_a_different_run(phantom_dir, tmp_path):
    _train(phantom_dir, tmp_path / "run", "mean-teacher", 2, checkpoint_every=1)
    with pytest.raises(ValueError, match="saved run used method=mean-teacher"):
        _train(phantom_dir, tmp_path / "run", "dinomix", 2, resume=True)


def test_methods_needing_unlabeled_data_say_so(phantom_dir, tmp_path):
    cfg = TrainConfig(method="mean-teacher", steps=1, **TINY)
    with pytest.raises(ValueError, match="learns from unlabeled scans"):
        train_on_dataset(cfg, phantom_dir, 3, tmp_path / "run", exclude=HELD_OUT)


def test_prefetched_batches_give_the_same_run(phantom_dir, tmp_path):
    """The GPU default (batches prepared ahead on a thread) must not change what is trained."""
    plain = _train(phantom_dir, tmp_path / "plain", "dinomix", 4, prefetch=0)
    ahead = _train(phantom_dir, tmp_path / "ahead", "dinomix", 4, prefetch=2)
    np.testing.assert_allclose([h["total"] for h in ahead.history], [h["total"] for h in plain.history], rtol=1e-6)


def test_student_noise_perturbs_only_the_unlabeled_view_and_is_reproducible(phantom_dir, tmp_path):
    every_voxel = dict(confidence=0.0, tail_confidence=0.0)  # an untrained teacher is never "sure"
    clean = _train(phantom_dir, tmp_path / "clean", "mean-teacher", 2, **every_voxel)
    noisy = _train(phantom_dir, tmp_path / "noisy", "mean-teacher", 2, student_noise=0.1, **every_voxel)
    again = _train(phantom_dir, tmp_path / "again", "mean-teacher", 2, student_noise=0.1, **every_voxel)
    first = [h["sup"] for h in clean.history]
    # The labeled half of the batch is untouched at step 0 (same weights, same patches) ...
    assert noisy.history[0]["sup"] == pytest.approx(first[0], rel=1e-6)
    # ... the unlabeled loss sees the noisy view against the clean view's pseudo-labels ...
    assert noisy.history[0]["unl"] != pytest.approx(clean.history[0]["unl"], rel=1e-6)
    # ... and the noise comes from the step's seed, so a rerun is identical.
    assert [h["total"] for h in again.history] == [h["total"] for h in noisy.history]


def test_training_reads_memory_mapped_cases_and_removes_them_after(phantom_dir, tmp_path, monkeypatch):
    """Cases are spilled next to the run and memory-mapped (bounded RAM for many full-size CTs);
    the files are gone when the run ends, whether it completed or was cancelled."""
    from dinomix_core.engine import pipeline

    seen = []
    real = pipeline.Trainer

    def recording(config, labeled, unlabeled, *args, **kwargs):
        seen.append([type(c.image) for c in (*labeled, *unlabeled)] + [type(c.label) for c in labeled])
        return real(config, labeled, unlabeled, *args, **kwargs)

    monkeypatch.setattr(pipeline, "Trainer", recording)
    result = _train(phantom_dir, tmp_path / "run", "mean-teacher", 2)
    assert seen and all(t is np.memmap for t in seen[0])
    assert not list((tmp_path / "run").glob(".cases-*"))
    assert result.model_path.exists()
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(TrainingCancelled):
        _train(phantom_dir, tmp_path / "cancelled", "supervised", 2, cancel=cancel)
    assert not list((tmp_path / "cancelled").glob(".cases-*"))


def test_cpu_training_runs_3d_students_channels_last_with_the_same_losses(phantom_dir, tmp_path, monkeypatch):
    """The channels-last-3d layout (a speed lever on CPU) changes no loss beyond float rounding."""
    import dinomix_core.engine.trainer as trainer_module

    seen = []
    real = trainer_module.channels_last_training
    monkeypatch.setattr(trainer_module, "channels_last_training", lambda d, s: seen.append(real(d, s)) or seen[-1])
    fast = _train(phantom_dir, tmp_path / "cl", "dinomix", 3)
    assert seen == [True]
    monkeypatch.setattr(trainer_module, "channels_last_training", lambda d, s: False)
    plain = _train(phantom_dir, tmp_path / "plain", "dinomix", 3)
    for a, b in zip(fast.history, plain.history):
        assert a["total"] == pytest.approx(b["total"], rel=1e-3, abs=1e-5)


def test_channels_last_training_is_for_3d_students_on_cpu_only():
    from dinomix_core.engine.trainer import channels_last_training
    from dinomix_core.models import create_student

    net3d = create_student("unet3d", num_classes=3, in_channels=1, width=4, depth=2)
    net2d = create_student("unet2d", num_classes=3, in_channels=1, width=4, depth=2)
    assert channels_last_training(torch.device("cpu"), net3d)
    assert not channels_last_training(torch.device("cpu"), net2d)
    assert not channels_last_training(torch.device("cuda"), net3d)
