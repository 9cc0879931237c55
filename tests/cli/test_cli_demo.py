"""`dinomix demo` trains the shared "quick" preset, reports its time by stage, and draws an
overlay with a legend of every class colour. Tiny settings: a few seconds of training."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from dinomix_core.cli.main import main
from dinomix_core.engine.presets import PRESETS
from dinomix_core.io import LabelMap


def test_tiny_demo_trains_the_quick_preset_and_draws_a_legend(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--cases", "3", "--test", "1", "--method", "supervised", "--steps", "2",
               "--patch", "16,32,32", "--width", "4", "--depth", "2", "--set", "batch_labeled=1", "--threads", "1"])
    assert rc == 0
    printed = capsys.readouterr()
    assert "elapsed:" in printed.out  # (stages under 0.5 s, like these 2 steps, are left off the line)
    report = json.loads((out / "report.json").read_text())
    config = report["config"]
    given = {"steps": 2, "patch_size": [16, 32, 32], "student_width": 4, "student_depth": 2, "batch_labeled": 1}
    for field, value in PRESETS["quick"].items():  # everything not given on the command line is the preset's
        expected = given.get(field, list(value) if isinstance(value, tuple) else value)
        assert config[field] == expected, field
    assert report["seconds"] > 0 and report["seconds_by_stage"]["training"] > 0
    assert report["cpu_seconds"] > 0 and report["test"] == ["phantom_002"]

    png = np.asarray(Image.open(out / "overlay.png").convert("RGB"))
    panel = 96 * 3  # the phantom's 96 x 96 slices at 3x
    assert png.shape[1] > 3 * panel and png.shape[0] > panel + 80  # three panels, a title row and the legend
    legend = png[panel + 52:].reshape(-1, 3)  # below the title rows and the panels
    colours = {tuple(int(c) for c in rgb) for rgb in LabelMap.preset("btcv13").colors[1:]}
    found = {tuple(int(c) for c in rgb) for rgb in np.unique(legend, axis=0)}
    assert colours <= found  # a swatch of every organ's exact colour
