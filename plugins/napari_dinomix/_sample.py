"""npe2 sample data: a phantom CT with its organs, and a ready sample project.

Both are generated on this machine (the phantom is procedural): nothing is downloaded.
"""

from __future__ import annotations

import numpy as np

from dinomix_core.data.phantom import generate_case, phantom_labelmap
from dinomix_core.project import Project
from dinomix_core.project.sample import create_sample_project

from ._layers import image_layer_data, labels_layer_data

PROJECT_KEY = "dinomix_project"
CASE_KEY = "dinomix_case"


def phantom_sample() -> list[tuple]:
    """[image, labels] of phantom case 0 (48x96x96 voxels (z, y, x), 5x4x4 mm, BTCV-13 organs)."""
    image, labels = generate_case(0, seed=0, size="small")
    return [image_layer_data(image, name="phantom_000"),
            labels_layer_data(labels, phantom_labelmap(), name="phantom_000 organs", reference=image)]


def sample_project() -> list[tuple]:
    """[image, labels] of the sample project's first case, tagged so the DINO-Mix widget opens the project.

    The project is created on first use (see ``dinomix_core.project.sample``) and reused after.
    The labels are the case's newest revision, or empty when it has none.
    """
    root = create_sample_project()
    with Project.open(root) as project:
        case = project.cases()[0]
        image = project.load_image(case.id)
        revision = project.current_revision(case.id)
        labels = project.load_labels(revision.id) if revision is not None else image.with_array(
            np.zeros(image.shape, np.uint8), modality="SEG")
        labelmap = project.require_label_map()
    layers = [image_layer_data(image, name=case.id),
              labels_layer_data(labels, labelmap, name=f"{case.id} labels", reference=image)]
    for _, kwargs, _ in layers:
        kwargs["metadata"][PROJECT_KEY] = str(root)
        kwargs["metadata"][CASE_KEY] = case.id
    return layers
