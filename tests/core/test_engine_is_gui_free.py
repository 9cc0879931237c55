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


def test_installed_packages_have_unique_import_names():
    import importlib.util

    assert importlib.util.find_spec("dinomix_app") is not None
    assert importlib.util.find_spec("napari_dinomix") is not None
    # Nothing generic named `app` or `plugins` comes from this project.
    for generic in ("app", "plugins"):
        spec = importlib.util.find_spec(generic)
        assert spec is None or "dinomix" not in str(spec.origin or spec.submodule_search_locations)
