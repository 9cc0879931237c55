"""The inference settings reach every front end: `dinomix predict [--fast]` and the predict job's ``fast``."""

from __future__ import annotations

import numpy as np
import pytest

from dinomix_core.cli.main import main
from dinomix_core.data.phantom import write_phantom_dataset
from dinomix_core.engine import pipeline
from dinomix_core.engine._windows import WindowGrid
from dinomix_core.engine.inference_settings import DEFAULT, FAST, REFERENCE, InferenceSettings, inference_settings
from dinomix_core.engine.jobs import CasePrediction, PredictJobSpec, run_predict_job
from dinomix_core.io import read_labels, read_volume

TINY_ARGS = ["--patch", "24,48,48", "--width", "4", "--depth", "2", "--batch-labeled", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("fast")
    data = root / "data"
    write_phantom_dataset(data, 3, 7, "small")
    run = root / "run"
    assert main(["train", "--data", str(data), "--labeled", "2", "--exclude", "phantom_002", "--method", "supervised",
                 "--steps", "1", "--out", str(run), *TINY_ARGS]) == 0
    return run / "model.pt", data / "imagesTr" / "phantom_002_0000.nii.gz"


def _record(monkeypatch, module, name):
    seen = []
    real = getattr(module, name)

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return seen


def test_fast_preset_runs_fewer_windows_on_a_full_ct_and_default_is_measured():
    full, window = (200, 512, 512), (64, 128, 128)
    windows = {s: len(WindowGrid.build(full, window, (s.overlap,) * 3)) for s in (REFERENCE, DEFAULT, FAST)}
    assert windows[FAST] < windows[DEFAULT] <= windows[REFERENCE]
    assert inference_settings(fast=True) is FAST and inference_settings() is DEFAULT
    assert REFERENCE.precision == "float32" and not REFERENCE.compile
    # Overlap 0.25 cost 4.1 Dice points on held-out cases (benchmarks/README.md section 3): the default keeps 0.5.
    assert DEFAULT.overlap == REFERENCE.overlap and DEFAULT.channels_last is False
    with pytest.raises(ValueError, match="overlap"):
        InferenceSettings(overlap=1.0)
    with pytest.raises(ValueError, match="precision"):
        InferenceSettings(precision="half")


def test_predict_fast_is_accepted_and_uses_the_fast_settings(trained, tmp_path, monkeypatch, capsys):
    model_pt, image = trained
    seen = _record(monkeypatch, pipeline, "predict_volume")
    for flag, expected in (([], DEFAULT), (["--fast"], FAST)):
        out = tmp_path / f"p{len(flag)}.nii.gz"
        assert main(["predict", "--checkpoint", str(model_pt), "--input", str(image), "--output", str(out), *flag]) == 0
        ref = read_volume(image)
        assert read_labels(out, reference=ref).same_grid(ref)
        used = seen[-1]
        assert {k: used[k] for k in expected.options()} == expected.options()
    assert seen[0]["overlap"] != seen[1]["overlap"]
    assert "--fast" in _help(capsys)


def _help(capsys) -> str:
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    return capsys.readouterr().out


def test_predict_job_fast_field_reaches_the_inferer(trained, monkeypatch):
    model_pt, image = trained
    seen = _record(monkeypatch, pipeline, "predict_with_uncertainty_bounded")
    slow = run_predict_job(PredictJobSpec(str(model_pt), image_path=str(image), device="cpu"))
    fast = run_predict_job(PredictJobSpec(str(model_pt), image_path=str(image), device="cpu", fast=True))
    assert isinstance(slow, CasePrediction) and isinstance(fast, CasePrediction)
    assert [s["overlap"] for s in seen] == [DEFAULT.overlap, FAST.overlap]
    assert fast.labels.shape == slow.labels.shape and fast.uncertainty.dtype == np.float16
