"""DINO-Mix Studio desktop app: a PySide6 main window hosting napari's viewer and the plugin's panels.

Start it with ``dinomix-app [PROJECT]``, ``dinomix-app --sample`` or ``python -m dinomix_app``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dinomix-studio")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
