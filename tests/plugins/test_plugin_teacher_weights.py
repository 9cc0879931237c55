"""Adding DINOv3 teacher weights from the Train panel: checked and installed in a worker process."""

from __future__ import annotations

import pytest
import torch

from dinomix_core.models import _dinov3

SMALL = "vit_small_patch16_dinov3"


@pytest.fixture
def weights_home(tmp_path, monkeypatch):
    """The per-user weights folder inside tmp_path, for this process and the worker it spawns."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-home"))
    monkeypatch.delenv("DINOMIX_WEIGHTS_DIR", raising=False)
    return tmp_path / "cache-home" / "dinomix" / "weights"


def _zero_checkpoint(path):
    """Full DINOv3 ViT-S shapes, stored compactly (expanded views of one zero: a few bytes each)."""
    model = _dinov3.create_vit(SMALL, device="meta")
    torch.save({k: torch.zeros(()).expand(v.shape) for k, v in model.state_dict().items()}, path)
    return path


def test_a_weight_file_is_installed_and_selected(widget, qtbot, tmp_path, weights_home):
    _viewer, w, _root = widget
    panel = w.train_panel
    messages = []
    w.session.message.connect(lambda level, text: messages.append((level, text)))
    panel.install_weights(str(_zero_checkpoint(tmp_path / "download.pth")))
    assert not panel.teacher.isEnabled() and not panel.start_button.isEnabled()  # locked meanwhile
    qtbot.waitUntil(lambda: panel.weights_worker is None, timeout=120_000)
    installed = weights_home / f"{SMALL}.pth"
    assert installed.is_file()
    assert panel.teacher.currentData() == str(installed)
    assert panel.teacher.isEnabled() and panel.start_button.isEnabled()
    assert messages[-1][0] == "info" and str(installed) in messages[-1][1]


def test_a_wrong_file_is_a_one_line_message_and_installs_nothing(widget, qtbot, tmp_path, weights_home):
    _viewer, w, _root = widget
    panel = w.train_panel
    messages = []
    w.session.message.connect(lambda level, text: messages.append((level, text)))
    bogus = tmp_path / "dinov3_vits16_pretrain_lvd1689m-0123abcd.pth"
    bogus.write_bytes(b"not a checkpoint at all")
    panel.install_weights(str(bogus))
    qtbot.waitUntil(lambda: panel.weights_worker is None, timeout=120_000)
    level, text = messages[-1]
    assert level == "error" and "\n" not in text and bogus.name in text
    assert not weights_home.exists() or not any(weights_home.iterdir())
    assert panel.teacher.isEnabled() and panel.teacher.currentData() != "__add__"
