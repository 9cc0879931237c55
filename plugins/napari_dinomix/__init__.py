"""napari plugin for DINO-Mix Studio."""
