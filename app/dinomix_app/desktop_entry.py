"""A launcher for Linux desktops: ``dinomix-app --install-desktop-entry``.

Writes a freedesktop.org desktop entry and the app's icon into the user's data folder
(``$XDG_DATA_HOME``, else ``~/.local/share``), so DINO-Mix Studio appears in the desktop's
application menu with its icon (its %f: a project folder, when the desktop passes one). Nothing outside the
user's own folder is touched; running it again replaces both files (atomically).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dinomix_core.io.atomic import atomic_write_bytes, atomic_write_text

from dinomix_app.icon import ICON_NAME, ICON_PATH

DESKTOP_FILE = f"{ICON_NAME}.desktop"


def data_home() -> Path:
    env = os.environ.get("XDG_DATA_HOME")
    return Path(env) if env else Path.home() / ".local" / "share"


def launch_command() -> str:
    """The Exec line's program: the ``dinomix-app`` script of this environment, else ``python -m``.

    Absolute paths: a launcher does not see the virtual environment a terminal had activated.
    """
    script = Path(sys.executable).with_name("dinomix-app")
    if script.is_file():
        return _quoted(script)
    return f"{_quoted(Path(sys.executable))} -m dinomix_app"


def _quoted(path: Path) -> str:
    """Desktop-entry quoting: double quotes, with ``"``, `` ` ``, ``$`` and ``\\`` escaped."""
    text = str(path)
    for ch in ("\\", '"', "`", "$"):
        text = text.replace(ch, "\\" + ch)
    return f'"{text}"'


def entry_text() -> str:
    return "\n".join([
        "[Desktop Entry]",
        "Type=Application",
        "Version=1.0",
        "Name=DINO-Mix Studio",
        "GenericName=CT organ segmentation",
        "Comment=Annotate CT scans with organ masks predicted by a model that trains in the background",
        f"Exec={launch_command()} %f",
        f"Icon={ICON_NAME}",
        "Terminal=false",
        "Categories=Science;MedicalSoftware;",
        "Keywords=CT;segmentation;annotation;organ;napari;",
        "",
    ])


def install_desktop_entry() -> tuple[Path, Path]:
    """Write the desktop entry and the icon; returns their paths. Linux (freedesktop) only."""
    if not sys.platform.startswith("linux"):
        raise OSError("a desktop entry is for Linux desktops; on this system start `dinomix-app` from a terminal "
                      "or make a shortcut to it.")
    home = data_home()
    icon = home / "icons" / "hicolor" / "scalable" / "apps" / ICON_PATH.name
    entry = home / "applications" / DESKTOP_FILE
    icon.parent.mkdir(parents=True, exist_ok=True)
    entry.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(icon, ICON_PATH.read_bytes())
    atomic_write_text(entry, entry_text())
    return entry, icon
