"""`dinomix weights add|list` through the real command-line entry point."""

from __future__ import annotations

import torch

from dinomix_core.cli.main import main
from dinomix_core.models import _dinov3
from dinomix_core.models.weights import file_sha256

SMALL = "vit_small_patch16_dinov3"


def compact_full_size_state(arch: str) -> dict[str, torch.Tensor]:
    """All-zero tensors with the full shapes of ``arch``, stored in a few bytes by torch.save."""
    return {k: torch.zeros(()).expand(v.shape) for k, v in _dinov3.meta_model(arch).state_dict().items()}


def test_weights_add_then_list(tmp_path, user_weights, capsys):
    src = tmp_path / f"{SMALL}.lvd1689m.pth"
    torch.save(compact_full_size_state(SMALL), src)
    assert main(["weights", "add", str(src)]) == 0
    out = capsys.readouterr().out
    installed = user_weights / src.name
    assert installed.is_file() and f"installed {installed}" in out and file_sha256(src)[:12] in out

    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "$DINOMIX_WEIGHTS_DIR (not set)" in out and str(user_weights) in out
    assert SMALL in out and str(installed) in out


def test_weights_list_when_empty_says_how_to_add(capsys):
    assert main(["weights", "list"]) == 0
    assert "dinomix weights add FILE" in capsys.readouterr().out


def test_weights_add_bad_file_is_one_clear_line_and_exit_2(tmp_path, user_weights, capsys):
    bad = tmp_path / "dinov3_vits16_pretrain_lvd1689m-00000000.pth"
    bad.write_bytes(b"half a download")
    assert main(["weights", "add", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bad) in err and "partial download" in err
    assert len(err.strip().splitlines()) == 1
    assert not user_weights.exists() or not any(user_weights.iterdir())


def test_weights_add_with_arch_and_folder(tmp_path, capsys):
    src = tmp_path / "download.pth"
    torch.save(compact_full_size_state(SMALL), src)
    target = tmp_path / "team-weights"
    assert main(["weights", "add", str(src), "--arch", SMALL, "--dir", str(target)]) == 0
    assert (target / f"{SMALL}.pth").is_file()
    assert main(["weights", "add", str(src), "--arch", "vit_base_patch16_dinov3", "--dir", str(target)]) == 2
    assert "does not fit teacher 'vit_base_patch16_dinov3'" in capsys.readouterr().err
