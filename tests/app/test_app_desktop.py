"""The app as a desktop program: its icon, and the Linux launcher `--install-desktop-entry` writes."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dinomix_app.icon import ICON_PATH


def test_the_icon_renders_at_launcher_and_title_bar_sizes(qapp):
    from dinomix_app.icon import app_icon

    icon = app_icon()
    assert not icon.isNull()
    for size in (16, 48, 256):
        image = icon.pixmap(size, size).toImage()
        assert (image.width(), image.height()) == (size, size)
        pixels = np.array([[image.pixelColor(x, y).getRgb() for x in range(0, size, max(1, size // 32))]
                           for y in range(0, size, max(1, size // 32))])
        assert pixels[..., 3].max() == 255 and pixels[..., :3].std() > 20, f"blank {size} px icon"


def test_install_desktop_entry_writes_a_launcher_with_the_icon(tmp_path, monkeypatch, capsys):
    from dinomix_app.cli import main

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    assert main(["--install-desktop-entry"]) == 0
    entry = tmp_path / "share" / "applications" / "dinomix-studio.desktop"
    icon = tmp_path / "share" / "icons" / "hicolor" / "scalable" / "apps" / "dinomix-studio.svg"
    assert capsys.readouterr().out.split() == ["wrote", str(entry), "wrote", str(icon)]
    assert icon.read_bytes() == ICON_PATH.read_bytes()
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(entry)
    desktop = parser["Desktop Entry"]
    assert desktop["Type"] == "Application" and desktop["Name"] == "DINO-Mix Studio"
    assert desktop["Icon"] == "dinomix-studio" and desktop["Terminal"] == "false"
    program, *rest = shlex.split(desktop["Exec"])
    assert Path(program).is_file() and rest[-1] == "%f"  # an absolute program: launchers see no venv
    if shutil.which("desktop-file-validate"):
        check = subprocess.run(["desktop-file-validate", str(entry)], capture_output=True, text=True)
        assert check.returncode == 0 and not check.stdout.strip(), check.stdout
    assert main(["--install-desktop-entry"]) == 0, "running it again replaces the files"


def test_install_desktop_entry_elsewhere_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from dinomix_app.cli import main

    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    assert main(["--install-desktop-entry"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Linux desktops" in err[0]
    assert not (tmp_path / "share").exists()


@pytest.mark.parametrize("argv", [["--empty", "somewhere"], ["--empty", "--sample"]])
def test_empty_with_a_project_is_one_line_exit_2(argv, capsys):
    from dinomix_app.cli import main

    assert main(argv) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
