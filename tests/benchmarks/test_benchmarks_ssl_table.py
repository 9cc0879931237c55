"""The README tables are rendered from a real (toy-sized) SSL benchmark result."""

from __future__ import annotations

import json

import pytest

from benchmarks.ssl_table import main, method_table, seed_table
from dinomix_core.benchmarking.ssl import run_ssl_benchmark


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("ssl")
    run_ssl_benchmark(out, methods=["supervised"], seeds=[0, 1], labeled=1, unlabeled=1, test=1, steps=2,
                      patch=(16, 32, 32), width=4, depth=2, result_json=out / "r.json")
    return out / "r.json"


def test_method_table_has_one_row_per_method_with_the_seed_mean(result):
    doc = json.loads(result.read_text())
    rows = method_table(doc).splitlines()
    assert len(rows) == 3 and rows[2].startswith("| supervised | 0,1 | ")
    mean = doc["methods"]["supervised"]["mean_dice"]
    assert f"{mean:.1f} ± " in rows[2]
    assert rows[0].count("|") == rows[2].count("|")  # every class has a column


def test_seed_table_lists_each_seed(result, capsys):
    doc = json.loads(result.read_text())
    runs = sorted(doc["runs"]["supervised"], key=lambda r: r["seed"])
    row = seed_table(doc).splitlines()[2]
    assert row == "| supervised | " + " | ".join(f"{r['mean_dice']:.1f} / {r['tail_dice']:.1f}" for r in runs) + " |"
    assert main([str(result)]) == 0 and "tail classes:" in capsys.readouterr().out


def test_clean_up_table_compares_raw_and_cleaned_scores(result, capsys):
    from benchmarks.ssl_table import clean_up_table

    doc = json.loads(result.read_text())
    row = doc["methods"]["supervised"]
    assert row["postprocessing"]["auto"]["mean_dice"] is not None
    assert len(row["postprocessing"]["kept_largest"]) == 2  # one decision per seed
    table = clean_up_table(doc)
    assert table.count("\n") == 2 and "| supervised |" in table
    main([str(result)])
    assert "mask clean-up" in capsys.readouterr().out


def test_a_later_result_replaces_a_method_seed_and_the_row_is_averaged_again(result, tmp_path, capsys):
    from benchmarks.ssl_table import merge_results

    doc = json.loads(result.read_text())
    newer = json.loads(result.read_text())
    seed1 = next(r for r in newer["runs"]["supervised"] if r["seed"] == 1)
    seed1["mean_dice"] = 99.0  # a re-run of seed 1 under another default
    newer["runs"]["supervised"] = [seed1]
    path = tmp_path / "newer.json"
    path.write_text(json.dumps(newer))
    merged = merge_results([result, path])
    by_seed = {r["seed"]: r for r in merged["runs"]["supervised"]}
    assert by_seed[1]["mean_dice"] == 99.0 and by_seed[1]["source"] == "newer.json"
    seed0 = next(r for r in doc["runs"]["supervised"] if r["seed"] == 0)
    assert by_seed[0]["source"] == result.name and by_seed[0]["mean_dice"] == seed0["mean_dice"]
    assert merged["methods"]["supervised"]["mean_dice"] == pytest.approx((seed0["mean_dice"] + 99.0) / 2)
    out = tmp_path / "merged.json"
    assert main([str(result), str(path), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["sources"] == [result.name, "newer.json"]
    assert "| supervised | 0,1 | " in capsys.readouterr().out
