"""`dinomix train --project`: the labeled cases train, the run is recorded, predictions come back
as model revisions that never touch human labels, and the next-scan ranking uses them."""

from __future__ import annotations

import json
import shutil

from dinomix_core.cli.main import main
from dinomix_core.data.phantom import write_phantom_dataset
from dinomix_core.project import Project

TINY = ["--patch", "16,32,32", "--width", "4", "--depth", "2", "--batch-labeled", "1", "--batch-unlabeled", "1"]


def test_train_on_a_project_writes_predictions_back(tmp_path, capsys):
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
    with Project.open(proj) as p:
        human_before = {c: p.label_revision(c).file_hash for c in ("phantom_000", "phantom_001")}

    assert main(["train", "--project", str(proj), "--method", "dinomix", "--teacher", "random", "--steps", "2",
                 "--token-stride", "16", "--out", str(tmp_path / "run"), *TINY]) == 0
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
