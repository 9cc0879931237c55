"""The GUI's presets are the engine's recipes: *Better first model* trains exactly what
`dinomix demo` trains (the "quick" preset; only the validation cadence differs, by design),
and *Quick first model* is the "first-overlay" recipe, the same recipe on the plain 2D student
stopped early, for the first look."""

from __future__ import annotations

from dinomix_core.cli.demo import _checked_config
from dinomix_core.cli.main import build_parser
from dinomix_core.engine.config import TrainConfig
from dinomix_core.engine.presets import PATCH_3D, PRESETS
from napari_dinomix._jobs import BETTER_PRESET, QUICK_PRESET
from napari_dinomix._jobs import PRESETS as GUI_PRESETS
from napari_dinomix._jobs import TrainRequest


def _gui_config(preset: str) -> TrainConfig:
    return TrainConfig.from_dict(TrainRequest(method="dinomix", preset=preset).config())


def test_better_first_model_and_demo_build_the_same_config(tmp_path):
    demo = _checked_config(build_parser().parse_args(["demo", "--out", str(tmp_path / "demo")]))
    gui = _gui_config(BETTER_PRESET)
    recipe = set(PRESETS["quick"])
    assert {f: getattr(gui, f) for f in recipe} == {f: getattr(demo, f) for f in recipe}
    assert demo.steps == gui.steps == PRESETS["quick"]["steps"]


def test_quick_first_model_is_the_first_overlay_recipe_and_the_fastest():
    gui = _gui_config(QUICK_PRESET)
    recipe = PRESETS["first-overlay"]
    assert {f: getattr(gui, f) for f in recipe} == {k: tuple(v) if isinstance(v, list) else v for k, v in recipe.items()}
    assert gui.student == "unet2d" and gui.steps < PRESETS["quick"]["steps"]
    # the rest of the recipe (patch, optimizer, schedule, sampler, PIC weights) is the demo's
    shared = set(PRESETS["quick"]) - {"student", "steps"}
    assert {f: getattr(gui, f) for f in shared} == {f: getattr(_gui_config(BETTER_PRESET), f) for f in shared}
    assert list(GUI_PRESETS)[0] == QUICK_PRESET == TrainRequest().preset


def test_a_3d_student_chosen_on_a_slice_preset_gets_a_patch_it_can_train_on():
    gui = _gui_config_with(QUICK_PRESET, student="unet3d")
    assert gui.student == "unet3d" and tuple(gui.patch_size) == PATCH_3D
    gui.validate()  # the slice preset's 4,96,96 would be refused for a depth-3 unet3d
    assert tuple(_gui_config_with(BETTER_PRESET, student="vnet").patch_size) == PATCH_3D
    assert tuple(_gui_config_with(QUICK_PRESET, student="unet2d").patch_size) == tuple(PRESETS["first-overlay"]["patch_size"])


def _gui_config_with(preset: str, **request) -> TrainConfig:
    return TrainConfig.from_dict(TrainRequest(method="dinomix", preset=preset, **request).config())
