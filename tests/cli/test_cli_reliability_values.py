"""Bad training values end in one line and exit 2 before any slow work (issue 13, "unchecked values").

"Before any slow work" is asserted, not assumed: the teacher factory, the case loader and
the trainer are replaced by functions that fail the test if they are ever called. Each class
is checked for `train --data` and `train --project`, and the engine's job API (what the GUI
calls) refuses the same settings without recording a run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinomix_core.cli.main import main
from dinomix_core.engine.checkpoint import STATE_KIND, save_checkpoint
from dinomix_core.engine.config import TrainConfig
from dinomix_core.engine.jobs import TrainJobSpec, run_train_job
from dinomix_core.io import LabelMap, Volume, write_dataset_json, write_image, write_labels
from dinomix_core.io.errors import DinomixInputError
from dinomix_core.project import Project

TINY = ["--patch", "16,32,32", "--width", "4", "--depth", "2", "--token-stride", "16", "--teacher", "random"]


def _slow(*args, **kwargs):
    raise AssertionError("slow work started before the bad value was refused")


@pytest.fixture(autouse=True)
def no_slow_work(monkeypatch):
    """Teacher, case loading and the trainer must never be reached by a refused command."""
    import dinomix_core.engine.jobs as jobs
    import dinomix_core.engine.pipeline as pipeline

    for module in (jobs, pipeline):
        monkeypatch.setattr(module, "make_teacher", _slow)
        monkeypatch.setattr(module, "Trainer", _slow)
    monkeypatch.setattr(pipeline, "load_cases", _slow)
    monkeypatch.setattr(jobs, "load_cases", _slow)


def _ct(rng) -> Volume:
    return Volume(rng.integers(-1000, 1000, (8, 32, 32)).astype(np.int16), spacing_zyx=(2.0, 1.0, 1.0),
                  origin_xyz=(0.0, 0.0, 0.0))


@pytest.fixture
def data(tmp_path):
    """An nnU-Net set of 3 labeled cases (a, b, c)."""
    root = tmp_path / "ds"
    rng = np.random.default_rng(0)
    for case in ("a", "b", "c"):
        ct = _ct(rng)
        write_image(ct, root / "imagesTr" / f"{case}_0000.nii.gz")
        labels = np.zeros(ct.shape, np.uint8)
        labels[2:6, 8:20, 8:20] = 1
        write_labels(labels, root / "labelsTr" / f"{case}.nii.gz", reference=ct)
    write_dataset_json(root / "dataset.json", LabelMap(["background", "liver"]).to_dataset_json_dict(
        num_training=3, channel_names={"0": "CT"}, file_ending=".nii.gz", name="t"))
    return root


@pytest.fixture
def project(tmp_path, data):
    """A project whose 3 cases all have final human labels (no unlabeled scan)."""
    proj = tmp_path / "proj"
    assert main(["project", "init", str(proj), "--labels", str(data / "dataset.json")]) == 0
    assert main(["project", "import-nnunet", str(proj), str(data)]) == 0
    return proj


def refused(capsys, argv, *needles) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def both_sources(data, project, tmp_path, labeled="1"):
    return [["train", "--data", data, "--labeled", labeled, "--out", tmp_path / "run", *TINY],
            ["train", "--project", project, *TINY]]


@pytest.mark.parametrize("option, value, needle", [
    ("--steps", "0", "--steps 0: training needs at least one step"),
    ("--steps", "-5", "--steps -5"),
    ("--lr", "nan", "--lr nan: the learning rate must be a finite number above 0"),
    ("--lr", "inf", "--lr inf"),
    ("--lr", "-0.1", "--lr -0.1"),
    ("--lr", "0", "--lr 0.0"),
    ("--patch", "0,0,0", "--patch 0,0,0: a patch is 3 positive voxel counts"),
    ("--batch-labeled", "0", "--batch-labeled 0"),
    ("--lambda-u", "nan", "--lambda-u nan"),
])
def test_bad_numbers_for_data_and_project(data, project, tmp_path, capsys, option, value, needle):
    for argv in both_sources(data, project, tmp_path):
        refused(capsys, [*argv, "--method", "supervised", option, value], needle)
    assert not (tmp_path / "run").exists()  # nothing written either


def test_a_patch_off_the_token_grid_says_which_sizes_work(data, project, tmp_path, capsys):
    for argv in both_sources(data, project, tmp_path):
        line = refused(capsys, [*argv, "--patch", "16,60,60", "--token-stride", "8", "--depth", "4"],
                       "--patch 16,60,60 does not fit --depth 4", "multiples of 16,16,16")
        assert "use --patch 16,64,64" in line
    # unet2d never pools z, so any depth of z works; y and x follow the token stride and the depth.
    line = refused(capsys, [*both_sources(data, project, tmp_path)[0], "--student", "unet2d", "--patch", "5,36,36",
                            "--depth", "2"], "multiples of 1,16,16")
    assert "use --patch 5,32,32" in line


def test_a_depth_the_patch_cannot_hold_is_bounded_by_the_patch(data, project, tmp_path, capsys):
    for argv in both_sources(data, project, tmp_path):
        refused(capsys, [*argv, "--patch", "64,128,128", "--depth", "10"],
                "does not fit --depth 10", "use --depth 6 or less")
        # One voxel at the bottleneck cannot be instance-normalised.
        refused(capsys, [*argv, "--patch", "16,16,16", "--depth", "4"], "more than one voxel")


def test_a_network_too_large_for_memory_is_refused_with_its_estimate(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("dinomix_core.engine.config_checks.available_bytes", lambda device: (2 * 2**30, "this machine has"))
    line = refused(capsys, ["train", "--data", data, "--labeled", "1", "--out", tmp_path / "run", "--method",
                            "supervised", "--teacher", "random", "--patch", "64,128,128", "--width", "64"],
                   "needs about", "this machine has 2.0 GB available", "choose a smaller --patch, --width or --depth")
    assert "M parameters" in line
    # The tiny student fits in the same 2 GB.
    config = TrainConfig(method="supervised", patch_size=(16, 32, 32), student_width=4, student_depth=2)
    config.validate(device="cpu")


def test_no_labeled_case(data, tmp_path, capsys):
    refused(capsys, ["train", "--data", data, "--labeled", "0", "--out", tmp_path / "run", *TINY],
            "--labeled 0: training needs at least one labeled case")
    with pytest.raises(DinomixInputError, match="no case is labeled"):
        from dinomix_core.engine.config_checks import check_split

        check_split(TrainConfig(), 0, 3, data)


def test_every_case_labeled_with_a_semi_supervised_method(data, project, tmp_path, capsys):
    refused(capsys, ["train", "--data", data, "--labeled", "3", "--out", tmp_path / "run", *TINY, "--method", "dinomix"],
            "every one of its 3 training case(s) is labeled", "'supervised'")
    refused(capsys, ["train", "--project", project, *TINY, "--method", "mean-teacher"],
            "has no unlabeled case", "'supervised'")
    with Project.open(project) as p:
        assert p.runs() == []  # no run recorded for a refused start


def test_labeled_is_refused_with_project(project, capsys):
    refused(capsys, ["train", "--project", project, "--labeled", "2", *TINY], "--labeled is for --data")


def test_cuda_without_a_gpu_for_train_and_predict(data, project, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv in both_sources(data, project, tmp_path):
        refused(capsys, [*argv, "--device", "cuda"], "--device cuda: no usable NVIDIA GPU", "--device cpu")
    model = tmp_path / "model.pt"
    model.write_bytes(b"never loaded: the device is checked first")
    refused(capsys, ["predict", "--checkpoint", model, "--input", data / "imagesTr" / "a_0000.nii.gz",
                     "--output", tmp_path / "a.nii.gz", "--device", "cuda"], "--device cuda: no usable NVIDIA GPU")


def _fake_state(run_dir, **config):
    """A last.pt as the trainer writes it: only its metadata is read by the early check."""
    cfg = TrainConfig(**config).to_dict()
    save_checkpoint(run_dir / "last.pt", kind=STATE_KIND, meta={"config": cfg, "step": 1, "history": []},
                    tensors={"model": {"w": torch.zeros(2)}})


def test_resume_with_other_settings_or_nothing_to_resume(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    base = ["train", "--data", data, "--labeled", "1", "--out", run_dir, "--method", "supervised", *TINY, "--resume"]
    refused(capsys, [*base, "--steps", "10"], f"{run_dir}: no such run folder, so there is nothing to resume",
            "drop --resume")
    run_dir.mkdir()
    line = refused(capsys, [*base, "--steps", "10"], "holds no last.pt")
    assert "model.pt" not in line  # it used to say "pass the model.pt"
    _fake_state(run_dir, method="supervised", steps=20, patch_size=(16, 32, 32), student_width=4, student_depth=2)
    refused(capsys, [*base, "--steps", "10"], "saved with other settings (--steps 20 -> 10)")
    refused(capsys, [*base, "--steps", "20", "--depth", "3", "--patch", "16,32,32"], "--depth 2 -> 3")


def test_a_truncated_state_says_so_in_whole_sentences(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _fake_state(run_dir, method="supervised", steps=20, patch_size=(16, 32, 32), student_width=4, student_depth=2)
    whole = (run_dir / "last.pt").read_bytes()
    (run_dir / "last.pt").write_bytes(whole[: len(whole) // 2])
    line = refused(capsys, ["train", "--data", data, "--labeled", "1", "--out", run_dir, "--method", "supervised",
                            *TINY, "--steps", "20", "--resume"],
                   "incomplete (cut short while copying or saving) or damaged", "start a new run")
    assert line.endswith(".") and "last.pt or" not in line


def test_a_truncated_model_suggests_a_model_not_last_pt(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _fake_state(run_dir)
    whole = (run_dir / "last.pt").read_bytes()
    model = tmp_path / "model.pt"
    model.write_bytes(whole[: len(whole) // 3])
    line = refused(capsys, ["predict", "--checkpoint", model, "--input", data / "imagesTr" / "a_0000.nii.gz",
                            "--output", tmp_path / "a.nii.gz"], "incomplete", "pass the model.pt of a finished")
    assert "last.pt" not in line
    # last.pt given to predict: refused, pointing at model.pt.
    line = refused(capsys, ["predict", "--checkpoint", run_dir / "last.pt", "--input",
                            data / "imagesTr" / "a_0000.nii.gz", "--output", tmp_path / "a.nii.gz"], "model.pt")


def test_the_job_api_refuses_the_same_settings_without_a_run(project):
    for config, needle in [({"steps": 0}, "steps must be at least 1"), ({"lr": float("nan")}, "lr nan"),
                           ({"patch_size": [16, 60, 60], "token_stride": 8}, "patch_size 16,60,60 does not fit"),
                           ({"student_depth": 10}, "student_depth 10")]:
        finished = run_train_job(TrainJobSpec(project_dir=str(project), config={"method": "supervised", **config},
                                              teacher_weights="random"))
        assert finished.status == "failed" and finished.input_error and finished.run_id is None, finished
        assert needle in finished.message and "\n" not in finished.message
    with Project.open(project) as p:
        assert p.runs() == []


def test_valid_settings_pass():
    tiny = TrainConfig(method="dinomix", patch_size=(16, 32, 32), student_width=4, student_depth=2, token_stride=16)
    assert tiny.validate(device="cpu") is tiny
    TrainConfig(student="unet2d", patch_size=(3, 64, 64), student_depth=3).validate()
    TrainConfig().validate()  # the defaults (64,128,128, depth 4, stride 8)


def test_a_mixing_box_range_outside_the_patch_is_refused_before_training():
    with pytest.raises(DinomixInputError, match="pic_box_z.*0 < low <= high <= 1"):
        TrainConfig(pic_box_z=(0.0, 1.0)).validate()
    with pytest.raises(DinomixInputError, match="pic_box"):
        TrainConfig(pic_box=(0.6, 0.3)).validate()
    assert TrainConfig(pic_box_z=(1.0, 1.0)).validate().pic_box_z == (1.0, 1.0)
