"""A headless install (engine + `dinomix` CLI) needs no GUI stack; the GUI and the test tools are extras."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUI = ("napari", "magicgui", "PySide6", "pyqtgraph", "qtpy", "vispy", "superqt", "PyQt5", "PyQt6")

# Runs a command in a fresh interpreter in which every GUI package fails to import, as on a
# cluster node where only `pip install dinomix-studio` was done.
BLOCKER = """
import importlib.abc, sys
class _NoGui(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {gui!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (headless install)", name=name)
        return None
sys.meta_path.insert(0, _NoGui())
"""


def _requirement_names(requirements: list[str]) -> set[str]:
    import re

    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_core_dependencies_hold_no_gui_package_and_the_extras_do():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = _requirement_names(project["dependencies"])
    assert not core & {g.lower() for g in GUI}, f"GUI packages among the core dependencies: {core & set(GUI)}"
    assert {"torch", "timm", "simpleitk", "numpy"} <= core
    extras = project["optional-dependencies"]
    assert {"napari", "magicgui", "pyside6-essentials", "pyqtgraph"} <= _requirement_names(extras["gui"])
    dev = _requirement_names(extras["dev"])
    assert "monai" in dev, "the MONAI cross-checks must run in every `make test`"
    assert "dinomix-studio" in dev and any("[gui]" in r for r in extras["dev"])


def _headless(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = BLOCKER.format(gui=GUI) + code
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def test_cli_writes_a_phantom_without_any_gui_package(tmp_path):
    out = _headless(
        "from dinomix_core.cli.main import main\n"
        "sys.exit(main(['phantom', '--out', 'ph', '--cases', '2', '--size', 'small']))\n", tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "ph" / "dataset.json").is_file()
    assert len(list((tmp_path / "ph" / "imagesTr").glob("*.nii.gz"))) == 2


def test_desktop_app_without_the_gui_extra_is_one_line_naming_the_fix(tmp_path):
    out = _headless("from dinomix_app.cli import main\nsys.exit(main([]))\n", tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    line, = out.stderr.strip().splitlines()
    assert "dinomix-studio[gui]" in line and "napari" in line
