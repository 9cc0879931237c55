"""napari plugin of DINO-Mix Studio (npe2 manifest: napari.yaml).

Readers, writers and dock widgets arrive with the GUI work; the package already installs
under the unique name ``napari_dinomix`` with its manifest entry point.
"""

import napari_dinomix._none_guard  # noqa: E402,F401  (a GUI process keeps None alive: see the module)
