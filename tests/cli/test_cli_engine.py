"""`dinomix train / predict / demo` end to end, a hard kill mid-run, and clear errors for bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from pathlib import Path

import numpy as np
import pytest

from dinomix_core.cli.main import main
from dinomix_core.data.phantom import write_phantom_dataset
from dinomix_core.io import read_labels, read_volume

TINY_ARGS = ["--patch", "16,32,32", "--width", "4", "--depth", "2", "--batch-labeled", "1", "--batch-unlabeled", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "data"
    write_phantom_dataset(out, 4, 5, "small")
    return out


def test_train_then_predict(data, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "--data", str(data), "--labeled", "2", "--exclude", "phantom_003", "--method", "mean-teacher",
               "--steps", "2", "--out", str(run), *TINY_ARGS])
    assert rc == 0
    assert "model:" in capsys.readouterr().out
    doc = json.loads((run / "run.json").read_text())
    assert doc["method"] == "mean-teacher" and doc["steps"] == 2
    image = data / "imagesTr" / "phantom_003_0000.nii.gz"
    assert main(["predict", "--checkpoint", str(run / "model.pt"), "--input", str(image), "--output", str(tmp_path / "p.nii.gz")]) == 0
    ref = read_volume(image)
    assert read_labels(tmp_path / "p.nii.gz", reference=ref).same_grid(ref)
    # A folder of CT files predicts every case, named by case id.
    assert main(["predict", "--checkpoint", str(run / "model.pt"), "--input", str(data / "imagesTr"), "--output", str(tmp_path / "all")]) == 0
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == [f"phantom_00{i}.nii.gz" for i in range(4)]
    # Mask clean-up: the decision is in model.pt; --postprocess switches it, and predict says what it does.
    assert doc["postprocessing"]["decided_on"] == "labeled training cases"
    capsys.readouterr()
    outputs = {}
    for mode in ("off", "largest", "auto"):
        out = tmp_path / f"p-{mode}.nii.gz"
        assert main(["predict", "--checkpoint", str(run / "model.pt"), "--input", str(image), "--output", str(out),
                     "--postprocess", mode]) == 0
        outputs[mode] = read_labels(out, reference=ref).array
        assert "mask clean-up" in capsys.readouterr().err
    raw = outputs["off"]
    for mode in ("largest", "auto"):
        assert ((outputs[mode] == raw) | (outputs[mode] == 0)).all()  # only islands removed, nothing added
    with pytest.raises(SystemExit):
        main(["predict", "--checkpoint", str(run / "model.pt"), "--input", str(image), "--output", str(out),
              "--postprocess", "biggest"])


def test_hard_kill_mid_run_then_resume_matches_an_uninterrupted_run(data, tmp_path):
    common = ["train", "--data", str(data), "--labeled", "2", "--exclude", "phantom_003", "--method", "supervised",
              "--steps", "8", "--checkpoint-every", "2", *TINY_ARGS, "--threads", "1"]
    assert main([*common, "--out", str(tmp_path / "straight")]) == 0
    killed = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dinomix_core.cli", *common, "--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (killed / "last.pt").exists(), "the run never wrote a checkpoint"
    assert not (killed / "model.pt").exists()
    assert main([*common, "--out", str(killed), "--resume"]) == 0
    a = json.loads((tmp_path / "straight" / "run.json").read_text())["history"]
    b = json.loads((killed / "run.json").read_text())["history"]
    assert [h["step"] for h in b] == list(range(8))
    np.testing.assert_allclose([h["total"] for h in b], [h["total"] for h in a], rtol=1e-5)


def test_demo_runs_end_to_end_and_says_the_teacher_is_random(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DINOMIX_WEIGHTS_DIR", str(tmp_path / "no_weights"))
    monkeypatch.setattr("platformdirs.user_cache_dir", lambda *a, **k: str(tmp_path / "cache"))
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--cases", "4", "--test", "1", "--steps", "2", "--patch", "16,32,32",
               "--width", "4", "--depth", "2", "--token-stride", "16"])
    assert rc == 0
    printed = capsys.readouterr()
    assert "RANDOM" in printed.err + printed.out
    report = json.loads((out / "report.json").read_text())
    assert report["random_teacher"] is True and report["test"] == ["phantom_003"]
    assert set(report["per_class"]) >= {"liver", "pancreas", "right_adrenal_gland"}
    assert (out / "predictions" / "phantom_003.nii.gz").exists()
    png = (out / "overlay.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_gives_one_clear_line(tmp_path, capsys, data):
    image = str(sorted((Path(data) / "imagesTr").glob("*.nii.gz"))[0])
    out = str(tmp_path / "y.nii.gz")
    assert main(["predict", "--checkpoint", str(tmp_path / "missing.pt"), "--input", image, "--output", out]) == 2
    err = capsys.readouterr().err
    assert "missing.pt" in err and "checkpoint not found" in err and "Traceback" not in err
    assert main(["predict", "--checkpoint", str(tmp_path / "missing.pt"), "--input", "x", "--output", out]) == 2
    err = capsys.readouterr().err
    assert "x" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert main(["predict", "--checkpoint", str(junk), "--input", image, "--output", out]) == 2
    assert "cannot be read as a DINO-Mix checkpoint" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "r"), "--steps", "1"]) == 2
    assert "--labeled" in capsys.readouterr().err
