"""The demo's overlay figure: image | ground truth | prediction of one axial slice, titled,
with a legend of every class name in its colour.

Why a legend: the bare three panels (the old demo_overlay.png) left a new user guessing which
colour is which organ, so a missing or spilled organ could not be read off the figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dinomix_core.io.atomic import atomic_path
from dinomix_core.io.labelmap import LabelMap
from dinomix_core.io.snapshot import overlay_rgb

_SCALE = 3  # nearest-neighbour upscaling of the voxel panels
_GAP = 12
_TITLE_H = 26
_ROW_H = 22
_COLUMNS = 3


def save_demo_overlay(path: str | Path, image_hu: np.ndarray, truth: np.ndarray, prediction: np.ndarray,
                      labelmap: LabelMap, *, title: str = "") -> Path:
    """Write the figure of one axial slice (each array (y, x): HU, label values) as a PNG, atomically.

    Classes present in the ground truth or the prediction of this slice are listed in black,
    the others in grey, so an organ that the slice does not cut is not mistaken for a miss.
    """
    from PIL import Image, ImageDraw, ImageFont

    panels = [overlay_rgb(image_hu, np.zeros_like(truth), labelmap), overlay_rgb(image_hu, truth, labelmap),
              overlay_rgb(image_hu, prediction, labelmap)]
    names = ["image", "ground truth", "prediction"]
    h, w = (s * _SCALE for s in panels[0].shape[:2])
    font = ImageFont.load_default(size=15)
    classes = [(v, n, c) for v, (n, c) in enumerate(zip(labelmap.names, labelmap.colors)) if v > 0]
    rows = -(-len(classes) // _COLUMNS)
    width = 3 * w + 4 * _GAP
    top = _TITLE_H + (_TITLE_H if title else 0)
    height = top + h + _GAP + rows * _ROW_H + _GAP
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((_GAP, 4), title, fill="black", font=font)
    for i, (panel, name) in enumerate(zip(panels, names)):
        x0 = _GAP + i * (w + _GAP)
        draw.text((x0, top - _TITLE_H + 4), name, fill="black", font=font)
        canvas.paste(Image.fromarray(panel).resize((w, h), Image.NEAREST), (x0, top))
    present = set(np.unique(truth).tolist()) | set(np.unique(prediction).tolist())
    column_w = (width - 2 * _GAP) // _COLUMNS
    for k, (value, name, colour) in enumerate(classes):
        x0 = _GAP + (k // rows) * column_w
        y0 = top + h + _GAP + (k % rows) * _ROW_H
        draw.rectangle((x0, y0 + 3, x0 + 14, y0 + 17), fill=tuple(int(c) for c in colour), outline="black")
        draw.text((x0 + 20, y0 + 1), name.replace("_", " "), fill="black" if value in present else "#999999", font=font)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)
