"""DINO-Mix Studio desktop app."""
