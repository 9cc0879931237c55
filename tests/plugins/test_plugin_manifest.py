"""The npe2 manifest validates, and napari finds and uses the plugin's reader and writers."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import npe2
import pytest
from _plugin_data import oblique_direction
from npe2 import PluginManager, PluginManifest

from dinomix_core.io import LabelMap, Volume, read_labels, write_image, write_labels

PLUGIN = "dinomix-studio"
OWN_MODULES = ("napari_dinomix._reader", "napari_dinomix._writer", "napari_dinomix._sample")


def test_manifest_validates():
    npe2_cli = Path(sys.executable).with_name("npe2")
    result = subprocess.run([str(npe2_cli), "validate", PLUGIN], capture_output=True, text=True, encoding="utf-8",
                            errors="replace", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_io_commands_resolve_to_callables():
    manifest = PluginManifest.from_distribution(PLUGIN)
    resolved = 0
    for command in manifest.contributions.commands:
        module, _, attr = command.python_name.partition(":")
        if module in OWN_MODULES:
            assert callable(getattr(importlib.import_module(module), attr)), command.python_name
            resolved += 1
    assert resolved == 5


@pytest.fixture
def plugin_manager():
    pm = PluginManager.instance()
    pm.discover()
    return pm


def test_npe2_offers_the_reader_writers_and_samples(tmp_path, plugin_manager):
    path = tmp_path / "ct.nii.gz"
    write_image(Volume(np.full((4, 5, 6), -500, np.int16), (2.0, 1.0, 1.0)), path)
    readers = [r.command for r in plugin_manager.iter_compatible_readers([str(path)])]
    assert f"{PLUGIN}.get_reader" in readers
    [(data, kwargs, kind)] = npe2.read([str(path)], plugin_name=PLUGIN, stack=False)
    assert kind == "image" and data.shape == (4, 5, 6) and kwargs["scale"] == (2.0, 1.0, 1.0)
    writers = {w.command for w in plugin_manager.iter_compatible_writers(["labels"])}
    assert {f"{PLUGIN}.write_labels_nifti", f"{PLUGIN}.write_labels_segnrrd"} <= writers
    samples = dict(plugin_manager.iter_sample_data()).get(PLUGIN, [])
    assert {s.key for s in samples} == {"phantom", "project"}


def test_viewer_opens_ct_and_labels_in_line(tmp_path, make_napari_viewer_proxy):
    """Through a real viewer: world geometry (mm), the Abdomen window, image and labels aligned."""
    rng = np.random.default_rng(1)
    ct = Volume(rng.integers(-1000, 1000, (8, 12, 10)).astype(np.int16), (3.0, 0.75, 0.9),
                (-40.0, 12.5, 210.0), oblique_direction(0.0, flip_xy=True))
    organs = np.zeros(ct.shape, np.uint8)
    organs[2:6, 3:9, 2:7] = 6
    lm = LabelMap.preset("btcv13")
    image_path = write_image(ct, tmp_path / "case_0000.nii.gz")
    labels_path = write_labels(ct.with_array(organs), tmp_path / "labels" / "case.nii.gz", labelmap=lm)
    (labels_path.parent / "dataset.json").write_text(json.dumps(lm.to_dataset_json_dict()))

    viewer = make_napari_viewer_proxy()
    [image] = viewer.open(str(image_path), plugin=PLUGIN)
    [labels] = viewer.open(str(labels_path), plugin=PLUGIN)
    assert type(image).__name__ == "Image" and type(labels).__name__ == "Labels"
    assert list(image.contrast_limits) == [-135.0, 215.0]
    np.testing.assert_allclose(image.scale, (3.0, 0.75, 0.9), rtol=1e-6)
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(image.translate, (0, 0, 0))  # flipped grid: the origin rides in the affine
    np.testing.assert_allclose(image.affine.affine_matrix[:3, 3], (210.0, 12.5, -40.0), rtol=1e-6)
    itk = ct.to_sitk()
    for idx in [(0, 0, 0), (7, 11, 9), (4, 6, 3)]:
        expected = itk.TransformIndexToPhysicalPoint(idx[::-1])[::-1]
        np.testing.assert_allclose(image.data_to_world(idx), expected, atol=1e-4)
        np.testing.assert_allclose(labels.data_to_world(idx), image.data_to_world(idx), atol=1e-9)
    np.testing.assert_allclose(labels.colormap.color_dict[6][:3], np.array(lm.colors[6]) / 255, atol=1e-6)

    # A correction saved through napari lands back on the image's grid with the class names.
    labels.data[0, 0, 0] = 1
    saved = labels.save(str(tmp_path / "out" / "corrected.nii.gz"), plugin=PLUGIN)
    assert saved == [str(tmp_path / "out" / "corrected.nii.gz"), str(tmp_path / "out" / "dataset.json")]
    back = read_labels(saved[0], reference=ct.with_array(organs), labelmap=lm)
    assert back.array[0, 0, 0] == 1 and (back.array == 6).sum() == (organs == 6).sum()
    assert LabelMap.from_dataset_json(tmp_path / "out" / "dataset.json").names == lm.names
