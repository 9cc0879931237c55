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
    # The clean-up is scored from the same raw predictions: it only ever removes voxels.
    from dinomix_core.io import read_labels

    run_dir = tmp_path / "runs" / "dinomix-seed0"
    for cleaned in (run_dir / "predictions_largest").glob("*.nii.gz"):
        raw = read_labels(run_dir / "predictions" / cleaned.name).array
        kept = read_labels(cleaned).array
        assert ((kept == raw) | (kept == 0)).all() and (kept > 0).sum() <= (raw > 0).sum()
    decision = saved["runs"]["dinomix"][0]["postprocessing"]["decision"]
    assert decision["decided_on"] == "labeled training cases" and decision["cases"] == 1


def test_step_cost_reports_both_ratios(tmp_path):
    doc = run_step_cost(tmp_path, steps=2, warmup=1, patch=(16, 32, 32), width=4, depth=2,
                        teacher_overrides=TINY_TEACHER, result_json=tmp_path / "s.json", profile_path=tmp_path / "p.txt")
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["ratio_cache_on"] > 0 and saved["ratio_cache_off"] > 0
    med = doc["median_step_seconds"]
    assert abs(saved["ratio_cache_on"] - med["dinomix_cache_on"] / med["mean_teacher"]) < 1e-9
    profile = (tmp_path / "p.txt").read_text()
    assert "== mean_teacher" in profile and "== dinomix_cache_on" in profile and "aten::convolution" in profile


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


def test_ssl_benchmark_in_parallel_with_a_time_budget(tmp_path):
    """Two spawned workers; the probe turns the budget into one step count for every method."""
    lines = []
    doc = run_ssl_benchmark(tmp_path, methods=["supervised", "fkd"], seeds=[0], labeled=1, unlabeled=1, test=1,
                            patch=(16, 32, 32), width=4, depth=2, jobs=2, time_budget_s=1.0, probe_steps=2,
                            min_steps=4, max_steps=60, result_json=tmp_path / "r.json", log=lines.append)
    probe = doc["protocol"]["steps_from_time_budget"]
    assert set(probe["seconds_per_step"]) == {"supervised", "fkd"}
    assert probe["slowest_seconds_per_step"] == max(probe["seconds_per_step"].values()) > 0
    # A 1 s budget cannot hold even the fixed cost: the floor (4 steps) applies to both methods.
    assert doc["protocol"]["steps"] == 4 and doc["protocol"]["parallel_runs"] == 2
    assert lines[0].startswith("probe:") and "4 steps" in lines[0]
    saved = json.loads((tmp_path / "r.json").read_text())
    assert {r["method"] for rs in saved["runs"].values() for r in rs} == {"supervised", "fkd"}
    assert (tmp_path / "token_cache").is_dir() and any((tmp_path / "token_cache").rglob("*"))
    for rs in saved["runs"].values():
        history = json.loads((tmp_path / "runs" / f"{rs[0]['method']}-seed0" / "run.json").read_text())
        assert history["config"]["steps"] == 4


def test_bench_set_overrides_parse_json_values_and_reject_unknown_fields():
    import pytest

    from dinomix_core.cli.bench import _parse_overrides

    assert _parse_overrides(["lambda_u=0.5", "student_noise=0.1", "pic_box=[0.2,0.4]", "student=vnet"]) == {
        "lambda_u": 0.5, "student_noise": 0.1, "pic_box": [0.2, 0.4], "student": "vnet"}
    with pytest.raises(SystemExit, match="lamda_u"):
        _parse_overrides(["lamda_u=1"])


def test_ssl_benchmark_resume_reuses_finished_runs_and_trains_only_new_ones(tmp_path):
    kwargs = dict(methods=["supervised"], labeled=1, unlabeled=1, test=1, steps=2, patch=(16, 32, 32), width=4, depth=2)
    first = run_ssl_benchmark(tmp_path, seeds=[0], **kwargs)
    run_dir = tmp_path / "runs" / "supervised-seed0"
    trained_at = (run_dir / "model.pt").stat().st_mtime_ns
    (run_dir / "predictions" / "phantom_002.nii.gz").unlink()  # an interrupted prediction is redone

    again = run_ssl_benchmark(tmp_path, seeds=[0, 1], resume=True, **kwargs)
    runs = {r["seed"]: r for r in again["runs"]["supervised"]}
    assert runs[0]["reused"] and not runs[1]["reused"]
    assert (run_dir / "model.pt").stat().st_mtime_ns == trained_at
    assert runs[0]["mean_dice"] == first["runs"]["supervised"][0]["mean_dice"]
    assert (run_dir / "predictions" / "phantom_002.nii.gz").exists()

    # A different config for the same run directory is trained again, not reused.
    changed = run_ssl_benchmark(tmp_path, seeds=[0], resume=True, overrides={"fg_fraction": 0.5}, **kwargs)
    assert not changed["runs"]["supervised"][0]["reused"]
    assert (run_dir / "model.pt").stat().st_mtime_ns != trained_at
