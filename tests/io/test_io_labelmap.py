"""Label maps: shipped organ presets, fixed colours, nnU-Net dataset.json in and out."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from dinomix_core.io import DinomixInputError, LabelMap, load_dataset_json, write_dataset_json
from dinomix_core.io.labelmap import preset_path

REPO = Path(__file__).resolve().parents[2]

BTCV13 = ["background", "spleen", "right_kidney", "left_kidney", "gallbladder", "esophagus", "liver", "stomach",
          "aorta", "inferior_vena_cava", "portal_vein_and_splenic_vein", "pancreas", "right_adrenal_gland",
          "left_adrenal_gland"]
AMOS15 = ["background", "spleen", "right_kidney", "left_kidney", "gallbladder", "esophagus", "liver", "stomach",
          "aorta", "inferior_vena_cava", "pancreas", "right_adrenal_gland", "left_adrenal_gland", "duodenum",
          "bladder", "prostate_uterus"]


@pytest.mark.parametrize(("name", "order"), [("btcv13", BTCV13), ("amos15", AMOS15)])
def test_presets_have_the_published_class_order(name, order):
    labelmap = LabelMap.preset(name)
    assert labelmap.names == order
    assert labelmap.values == list(range(len(order)))
    assert labelmap.num_classes == len(order)
    assert labelmap.title == name


@pytest.mark.parametrize("name", ["btcv13", "amos15"])
def test_preset_colours_are_distinct_and_background_is_transparent(name):
    labelmap = LabelMap.preset(name)
    assert labelmap.colors[0] == (0, 0, 0)
    organs = labelmap.colors[1:]
    for a, b in itertools.combinations(organs, 2):
        assert math.dist(a, b) > 40, f"colours too close: {a} {b}"
    colors = labelmap.color_dict()
    assert colors[0] == (0.0, 0.0, 0.0, 0.0)
    assert colors[labelmap.value_of("liver")] == pytest.approx((221 / 255, 130 / 255, 101 / 255, 1.0))
    assert set(colors) == set(labelmap.values)
    assert labelmap.color_dict(with_default=True)[None] == (0.0, 0.0, 0.0, 0.0)


def test_same_organ_has_the_same_colour_in_every_preset():
    btcv, amos = LabelMap.preset("btcv13"), LabelMap.preset("amos15")
    for name in set(btcv.names) & set(amos.names):
        assert btcv.colors[btcv.value_of(name)] == amos.colors[amos.value_of(name)]


@pytest.mark.parametrize("name", ["btcv13", "amos15"])
def test_top_level_label_resources_match_the_packaged_ones(name):
    packaged = preset_path(name)
    assert packaged.parent.name == "resources" and packaged.parent.parent.name == "dinomix_core"
    top = REPO / "resources" / "labels" / f"{name}.json"
    assert top.read_bytes() == packaged.read_bytes(), f"{top} differs from the canonical {packaged}; copy it over"
    doc = json.loads(packaged.read_text())
    assert [row["value"] for row in doc["labels"]] == list(range(len(doc["labels"])))


def test_name_lookup():
    btcv = LabelMap.preset("BTCV-13")
    assert btcv.name_of(6) == "liver"
    assert btcv.display_name(12) == "right adrenal gland"
    assert btcv.value_of("Right Kidney") == 2  # case and spaces do not matter
    with pytest.raises(KeyError):
        btcv.value_of("duodenum")
    with pytest.raises(KeyError):
        btcv.name_of(14)
    with pytest.raises(DinomixInputError, match="unknown label map preset 'totalseg'"):
        LabelMap.preset("totalseg")


def test_dataset_json_round_trip(tmp_path):
    amos = LabelMap.preset("amos15")
    data = amos.to_dataset_json_dict(num_training=3)
    assert data["labels"]["background"] == 0 and data["labels"]["prostate_uterus"] == 15
    assert data["channel_names"] == {"0": "CT"} and data["file_ending"] == ".nii.gz" and data["numTraining"] == 3
    path = write_dataset_json(tmp_path, data)
    assert path == tmp_path / "dataset.json"
    assert load_dataset_json(tmp_path) == data
    back = LabelMap.from_dataset_json(path)
    assert back.names == amos.names
    assert back.colors == amos.colors  # known organ names get their preset colours back


def test_custom_colours_survive_a_dataset_json_round_trip(tmp_path):
    custom = LabelMap(["background", "liver", "tumour"], [(0, 0, 0), (10, 20, 30), (250, 0, 0)], title="liver-tumour")
    data = custom.to_dataset_json_dict()
    assert data["label_colors"] == {"background": [0, 0, 0], "liver": [10, 20, 30], "tumour": [250, 0, 0]}
    assert LabelMap.from_dataset_json(data) == custom
    write_dataset_json(tmp_path, data)
    assert LabelMap.from_dataset_json(tmp_path) == custom
    data["label_colors"]["tumour"] = [300, 0, 0]
    write_dataset_json(tmp_path, data)
    with pytest.raises(DinomixInputError, match="not an RGB triple"):
        LabelMap.from_dataset_json(tmp_path)


def test_dataset_json_with_other_names_gets_stable_distinct_colours(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"labels": {"background": 0, "Liver": 1, "tumour": 2, "cyst": 3}, "channel_names": {"0": "CT"}}))
    labelmap = LabelMap.from_dataset_json(tmp_path / "dataset.json")
    assert labelmap.names == ["background", "Liver", "tumour", "cyst"]
    assert labelmap.colors[1] == LabelMap.preset("btcv13").colors[6]
    assert len(set(labelmap.colors)) == 4
    assert LabelMap.from_dataset_json(tmp_path / "dataset.json").colors == labelmap.colors


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        ({"background": 0, "liver": 2}, "not consecutive"),
        ({"background": 0, "liver": 1, "tumour": [1, 2]}, "region-based labels are not supported"),
        ({"background": 0, "liver": 1, "spleen": 1}, "share value 1"),
        ({"background": 0, "liver": -1}, "values must be integers"),
        ({"background": 0}, "no class besides the background"),
    ],
)
def test_bad_dataset_json_labels(tmp_path, labels, match):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": labels}))
    with pytest.raises(DinomixInputError, match=match) as info:
        LabelMap.from_dataset_json(path)
    assert str(path) in str(info.value)


def test_bad_dataset_json_files(tmp_path):
    with pytest.raises(DinomixInputError, match="dataset.json not found"):
        load_dataset_json(tmp_path)
    (tmp_path / "dataset.json").write_text("{labels: oops")
    with pytest.raises(DinomixInputError, match="not valid JSON"):
        load_dataset_json(tmp_path / "dataset.json")
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}}))
    with pytest.raises(DinomixInputError, match='no "labels"'):
        load_dataset_json(tmp_path / "dataset.json")
    with pytest.raises(DinomixInputError, match='without "labels"'):
        write_dataset_json(tmp_path / "new.json", {"name": "x"})
    assert not (tmp_path / "new.json").exists()


def test_labelmap_rejects_inconsistent_construction():
    with pytest.raises(ValueError, match="unique"):
        LabelMap(["background", "liver", "liver"])
    with pytest.raises(ValueError, match="3 names but 2 colours"):
        LabelMap(["background", "liver", "spleen"], [(0, 0, 0), (1, 2, 3)])
