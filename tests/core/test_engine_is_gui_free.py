"""The engine must stay free of Qt, napari and magicgui: the GUI talks to it through callbacks."""

import subprocess
import sys

GUI_MODULES = ("PySide6", "PyQt5", "PyQt6", "qtpy", "napari", "magicgui", "superqt", "vispy", "npe2")


def test_dinomix_core_imports_no_gui_toolkit():
    code = (
        "import sys, importlib, pkgutil, dinomix_core\n"
        "for m in pkgutil.walk_packages(dinomix_core.__path__, 'dinomix_core.'):\n"
        "    importlib.import_module(m.name)\n"
        "from dinomix_core.cli.main import build_parser\n"
        "build_parser()\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {GUI_MODULES!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"dinomix_core pulled in GUI modules: {out.stdout.strip()}"


def test_wheel_installs_only_uniquely_named_packages(tmp_path):
    """Installing must not put generic top-level `app` or `plugins` modules into site-packages."""
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(root)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("dinomix_studio-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"dinomix_core", "dinomix_app", "napari_dinomix"}
    # Package data a user's install needs: class maps and the napari manifest.
    assert "dinomix_core/resources/btcv13.json" in names and "dinomix_core/resources/amos15.json" in names
    assert "napari_dinomix/napari.yaml" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "dinomix = dinomix_core.cli:main" in entry_points
    assert "napari_dinomix:napari.yaml" in entry_points
