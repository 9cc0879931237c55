"""Sample data: the phantom pair and the sample project, generated locally (no download)."""

from __future__ import annotations

import numpy as np

from dinomix_core.data.phantom import generate_case, phantom_labelmap
from dinomix_core.project import Project
from napari_dinomix._sample import phantom_sample, sample_project


def test_phantom_sample_is_case_zero_with_its_organs():
    [(image, ikw, ikind), (labels, lkw, lkind)] = phantom_sample()
    truth_image, truth_labels = generate_case(0, seed=0, size="small")
    assert (ikind, lkind) == ("image", "labels")
    np.testing.assert_array_equal(image, truth_image.array)
    np.testing.assert_array_equal(labels, truth_labels.array)
    assert image.shape == (48, 96, 96) and labels.dtype == np.uint8
    assert ikw["scale"] == lkw["scale"] == (5.0, 4.0, 4.0)
    assert ikw["translate"] == lkw["translate"]
    assert ikw["contrast_limits"] == (-135.0, 215.0)
    assert list(lkw["metadata"]["dinomix_classes"]["labels"]) == phantom_labelmap().names
    assert set(np.unique(labels)) <= set(range(14)) and len(np.unique(labels)) > 5


def test_sample_project_is_made_once_and_tagged_for_the_widget(sample_dir):
    layers = sample_project()
    root = sample_dir.resolve()
    assert (root / "project.sqlite").is_file()
    for _, kwargs, _ in layers:
        assert kwargs["metadata"]["dinomix_project"] == str(root)
        assert kwargs["metadata"]["dinomix_case"] == "phantom_000"
    (image, _, _), (labels, lkw, kind) = layers
    assert kind == "labels"
    np.testing.assert_array_equal(labels, generate_case(0, seed=0, size="small")[1].array)
    with Project.open(root) as project:
        assert len(project.cases()) == 4
        assert sum(project.label_revision(c.id) is not None for c in project.cases()) == 2
        rev = project.save_labels("phantom_000", np.zeros(image.shape, np.uint8), author="me", final=False)
    again = sample_project()  # reused, with the user's newest revision (a draft) shown
    assert again[0][1]["metadata"]["dinomix_project"] == str(root)
    assert not again[1][0].any()
    assert again[1][1]["metadata"]["dinomix_source"] == str(rev.path)


def test_samples_open_in_a_viewer(make_napari_viewer_proxy):
    viewer = make_napari_viewer_proxy()
    viewer.open_sample("dinomix-studio", "phantom")
    image, labels = viewer.layers
    assert image.contrast_limits == [-135.0, 215.0]
    assert type(labels).__name__ == "Labels"
    np.testing.assert_allclose(image.data_to_world((10, 20, 30)), labels.data_to_world((10, 20, 30)))
    viewer.open_sample("dinomix-studio", "project")
    assert viewer.layers[-1].metadata["dinomix_case"] == "phantom_000"
