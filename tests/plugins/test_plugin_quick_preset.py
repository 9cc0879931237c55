"""The GUI's *Quick first model* and `dinomix demo` train the same recipe: the engine's
"quick" preset (only the step count and validation cadence differ, by design)."""

from __future__ import annotations

from dinomix_core.cli.demo import _checked_config
from dinomix_core.cli.main import build_parser
from dinomix_core.engine.config import TrainConfig
from dinomix_core.engine.presets import PRESETS, QUICK_FIRST_OVERLAY_STEPS
from napari_dinomix._jobs import PRESETS as GUI_PRESETS
from napari_dinomix._jobs import TrainRequest


def test_gui_quick_preset_and_demo_build_the_same_config(tmp_path):
    demo = _checked_config(build_parser().parse_args(["demo", "--out", str(tmp_path / "demo")]))
    gui = TrainConfig.from_dict(TrainRequest(method="dinomix", preset="Quick first model").config())
    recipe = set(PRESETS["quick"]) - {"steps"}
    assert {f: getattr(gui, f) for f in recipe} == {f: getattr(demo, f) for f in recipe}
    assert demo.steps == PRESETS["quick"]["steps"]
    assert gui.steps == QUICK_FIRST_OVERLAY_STEPS == GUI_PRESETS["Quick first model"]["steps"]
    assert gui.lr == PRESETS["quick"]["lr"] and gui.lr_schedule == PRESETS["quick"]["lr_schedule"]
