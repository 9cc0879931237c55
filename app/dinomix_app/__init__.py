"""DINO-Mix Studio desktop app (PySide6 main window hosting napari and the plugin's widgets).

The window itself arrives with the GUI work; this package reserves the installed import name
``dinomix_app`` so nothing generic named ``app`` reaches site-packages.
"""
