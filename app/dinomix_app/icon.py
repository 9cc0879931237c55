"""The app's icon: the window's, the taskbar's, and the desktop launcher's (``desktop_entry``).

One SVG shipped inside the package (drawn for the product: an axial abdominal CT slice with
its organ labels in the app's class colours), so a wheel install has it and Qt renders it
sharply at every size.
"""

from __future__ import annotations

from pathlib import Path

ICON_NAME = "dinomix-studio"
ICON_PATH = Path(__file__).with_name("icons") / f"{ICON_NAME}.svg"


def app_icon():
    """A QIcon of ``ICON_PATH`` (Qt's SVG icon engine renders it at each requested size)."""
    from qtpy.QtGui import QIcon

    return QIcon(str(ICON_PATH))
