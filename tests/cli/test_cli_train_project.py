"""`dinomix train --project`: the labeled cases train, the run is recorded, predictions come back
as model revisions that never touch human labels, and the next-scan ranking uses them."""

from __future__ import annotations

import json
import shutil
import signal

from dinomix_core.cli import _progress
from dinomix_core.cli.main import main
from dinomix_core.data.phantom import write_phantom_dataset
from dinomix_core.engine.events import StepEvent
from dinomix_core.project import Project

TINY = ["--patch", "16,32,32", "--width", "4", "--depth", "2", "--batch-labeled", "1", "--batch-unlabeled", "1"]


def _phantom_project(tmp_path):
    """A BTCV-13 project: phantom_000/001 labeled (imported as nnU-Net), phantom_002/003 unlabeled."""
    data = tmp_path / "data"
    write_phantom_dataset(data, 4, 3, "small")
    # Two labeled cases go in as an nnU-Net set; two more scans come without labels.
    labeled = tmp_path / "labeled"
    (labeled / "imagesTr").mkdir(parents=True)
    (labeled / "labelsTr").mkdir()
    for cid in ("phantom_000", "phantom_001"):
        shutil.copy(data / "imagesTr" / f"{cid}_0000.nii.gz", labeled / "imagesTr")
        shutil.copy(data / "labelsTr" / f"{cid}.nii.gz", labeled / "labelsTr")
    shutil.copy(data / "dataset.json", labeled / "dataset.json")
    proj = tmp_path / "proj"
    assert main(["project", "init", str(proj), "--labels", "btcv13"]) == 0
    assert main(["project", "import-nnunet", str(proj), str(labeled)]) == 0
    assert main(["project", "add", str(proj), str(data / "imagesTr" / "phantom_002_0000.nii.gz"),
                 str(data / "imagesTr" / "phantom_003_0000.nii.gz")]) == 0
    return proj


def test_train_on_a_project_writes_predictions_back(tmp_path, capsys):
    proj = _phantom_project(tmp_path)
    with Project.open(proj) as p:
        human_before = {c: p.label_revision(c).file_hash for c in ("phantom_000", "phantom_001")}

    assert main(["train", "--project", str(proj), "--method", "dinomix", "--teacher", "random", "--steps", "2",
                 "--token-stride", "16", "--val-every", "2", "--out", str(tmp_path / "run"), *TINY]) == 0
    capsys.readouterr()

    with Project.open(proj) as p:
        run = p.latest_run()
        assert run.status == "completed" and run.method == "dinomix" and "random" in run.teacher
        assert run.checkpoint is not None and run.checkpoint.exists()
        preds = {row["case_id"]: row for row in p.predictions(run.id)}
        assert set(preds) == {"phantom_002", "phantom_003"}
        assert all(0.0 <= row["uncertainty"] <= 1.0 for row in preds.values())
        # Human labels are untouched and still the labels; predictions are model revisions.
        for cid, digest in human_before.items():
            assert p.label_revision(cid).file_hash == digest
        for cid in preds:
            assert p.current_revision(cid).kind == "model"
            assert p.label_revision(cid) is None

    assert main(["project", "next", str(proj), "--json"]) == 0
    ranked = json.loads(capsys.readouterr().out)
    rows = ranked if isinstance(ranked, list) else ranked.get("next", ranked.get("cases"))
    assert [r["id"] for r in rows] == sorted(preds, key=lambda c: -preds[c]["uncertainty"])


def test_ctrl_c_records_the_run_cancelled_and_resume_finishes_it(tmp_path, capsys, monkeypatch):
    proj = _phantom_project(tmp_path)
    show = _progress.ConsoleProgress.__call__

    def press_ctrl_c_after_the_first_step(self, event):
        show(self, event)
        if isinstance(event, StepEvent) and event.step == 1:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(_progress.ConsoleProgress, "__call__", press_ctrl_c_after_the_first_step)
    args = ["train", "--project", str(proj), "--teacher", "random", "--token-stride", "16", *TINY]
    assert main([*args, "--steps", "3", "--val-every", "3", "--no-predict"]) == 130
    assert "cancelled: run 1 cancelled after 1 of 3 steps" in capsys.readouterr().err
    with Project.open(proj) as p:
        run = p.latest_run()
        assert run.status == "cancelled" and run.metrics["steps_done"] == 1
    assert (proj / "runs" / "run-0001" / "last.pt").is_file()

    monkeypatch.setattr(_progress.ConsoleProgress, "__call__", show)
    # The resumed run keeps its recorded settings (3 steps, tiny student) for options not given.
    assert main(["train", "--project", str(proj), "--resume", "--teacher", "random"]) == 0
    out = capsys.readouterr().out
    assert "runs/run-0001/model.pt" in out and "held-out" not in out  # two labels: none held out
    with Project.open(proj) as p:
        assert [r.id for r in p.runs()] == [1]
        run = p.run(1)
        assert run.status == "completed" and run.metrics["steps"] == 3
        assert {row["case_id"] for row in p.predictions(1)} == {"phantom_002", "phantom_003"}
    history = json.loads((proj / "runs" / "run-0001" / "run.json").read_text())["history"]
    assert [h["step"] for h in history] == [0, 1, 2]


def test_out_holding_a_run_needs_force_or_resume(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"an earlier model")
    (run / "notes.txt").write_text("mine")
    args = ["train", "--data", str(tmp_path / "data"), "--labeled", "1", "--out", str(run)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pass --force to overwrite or --resume to continue" in err
    assert (run / "model.pt").exists()
    # --force replaces the run's own files (here the data folder is then missing: exit 2 as well),
    # moving them aside rather than deleting them: the typo costs nothing.
    assert main([*args, "--force"]) == 2
    assert "pass --force" not in capsys.readouterr().err
    assert not (run / "model.pt").exists() and (run / "notes.txt").exists()
    kept = list(run.glob("replaced-*/model.pt"))
    assert len(kept) == 1 and kept[0].read_bytes() == b"an earlier model"
