"""The benchmarks run end to end at toy size: the SSL comparison, the step cost, and the DHC
Synapse recipe on a phantom data set laid out like Synapse (img0001..., DHC split files)."""

from __future__ import annotations

import json
import shutil

from dinomix_core.benchmarking.ssl import run_ssl_benchmark
from dinomix_core.benchmarking.step_cost import run_step_cost
from dinomix_core.cli.main import main
from dinomix_core.data.phantom import write_phantom_dataset
from dinomix_core.io import LabelMap, write_dataset_json

TINY_TEACHER = dict(depth=1, embed_dim=32, num_heads=2)


def test_ssl_benchmark_compares_methods_on_the_same_cases(tmp_path):
    lines = []
    doc = run_ssl_benchmark(tmp_path, methods=["supervised", "dinomix"], seeds=[0], labeled=1, unlabeled=1, test=1,
                            steps=2, patch=(16, 32, 32), width=4, depth=2, result_json=tmp_path / "r.json", log=lines.append)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert set(saved["methods"]) == {"supervised", "dinomix"}
    assert "RANDOM TEACHER" in saved["teacher"]
    for row in saved["methods"].values():
        assert 0.0 <= row["mean_dice"] <= 100.0 and "per_class" in row
    assert len(lines) == 2 and doc["protocol"]["steps"] == 2


def test_step_cost_reports_both_ratios(tmp_path):
    doc = run_step_cost(tmp_path, steps=2, warmup=1, patch=(16, 32, 32), width=4, depth=2,
                        teacher_overrides=TINY_TEACHER, result_json=tmp_path / "s.json")
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["ratio_cache_on"] > 0 and saved["ratio_cache_off"] > 0
    med = doc["median_step_seconds"]
    assert abs(saved["ratio_cache_on"] - med["dinomix_cache_on"] / med["mean_teacher"]) < 1e-9


def test_synapse_recipe_on_a_phantom_laid_out_like_synapse(tmp_path, capsys):
    phantom = tmp_path / "phantom"
    write_phantom_dataset(phantom, 6, 2, "small")
    synapse = tmp_path / "Synapse"
    for folder in ("imagesTr", "labelsTr"):
        (synapse / folder).mkdir(parents=True)
    for i in range(6):
        shutil.copy(phantom / "imagesTr" / f"phantom_{i:03d}_0000.nii.gz", synapse / "imagesTr" / f"img{i + 1:04d}_0000.nii.gz")
        shutil.copy(phantom / "labelsTr" / f"phantom_{i:03d}.nii.gz", synapse / "labelsTr" / f"img{i + 1:04d}.nii.gz")
    write_dataset_json(synapse, LabelMap.preset("btcv13").to_dataset_json_dict(num_training=6))
    split = tmp_path / "splits"
    split.mkdir()
    (split / "labeled_20p.txt").write_text("0001\n0002\n")
    (split / "unlabeled_20p.txt").write_text("0003\n0004\n")
    (split / "eval.txt").write_text("0005\n")
    (split / "test.txt").write_text("0006\n")
    out = tmp_path / "out"
    rc = main(["bench", "synapse", "--data", str(synapse), "--split", str(split), "--out", str(out), "--steps", "2",
               "--patch", "16,32,32", "--width", "4", "--depth", "2", "--method", "mean-teacher"])
    assert rc == 0
    doc = json.loads((out / "synapse.json").read_text())
    assert doc["protocol"]["test_cases"] == ["img0006"] and doc["protocol"]["inplane_downsample"] == 2
    assert doc["published_mean_dice"]["DINO-Mix (paper)"] == 66.45
    assert doc["n_cases"] == 1 and "spleen" in doc["per_class"]
    # The DHC in-plane x2 down-sampling really happened: 96 x 96 became 48 x 48.
    from dinomix_core.io import read_volume

    assert read_volume(out / "preprocessed" / "imagesTr" / "img0006_0000.nii.gz").shape == (48, 48, 48)
