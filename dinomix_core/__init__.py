"""DINO-Mix engine: I/O, data, models, methods, training and inference. No Qt, no napari."""
__version__ = "0.1.0"
