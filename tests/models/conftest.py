"""Fixtures for model tests: weight folders kept inside tmp_path, tiny DINOv3 checkpoints."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest
import torch

from dinomix_core.models import _dinov3

#: A same-architecture DINOv3 small enough for CPU tests (layer scale 1 so blocks matter).
TINY = dict(depth=2, embed_dim=32, num_heads=2, init_values=1.0)


@pytest.fixture(autouse=True)
def user_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the per-user cache into tmp_path and clear $DINOMIX_WEIGHTS_DIR: never the real home."""
    cache_root = tmp_path / "user-cache"
    monkeypatch.delenv("DINOMIX_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda appname=None, *a, **k: str(cache_root / (appname or "")))
    return cache_root / "dinomix" / "weights"


def tiny_state(name: str, seed: int, **overrides) -> dict[str, torch.Tensor]:
    """timm-named state dict of a tiny ``name`` with every parameter random (biases included)."""
    model = _dinov3.create_vit(name, **{**TINY, **overrides})
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        state[key] = (torch.randn(value.shape, generator=gen) * 0.2 + (1.0 if key.endswith("gamma_1") or key.endswith("gamma_2") else 0.0)).contiguous()
    return state


def to_meta_layout(state: dict[str, torch.Tensor], *, qkv_bias_value: float | None = 0.0, seed: int = 0) -> dict[str, torch.Tensor]:
    """Invert timm's conversion: the key names and fused biases of Meta's DINOv3 release.

    The k part of the fused bias is random: Meta masks it (bias_mask), so loading must drop it.
    Bias-free timm models get a fused bias filled with ``qkv_bias_value``.
    """
    gen = torch.Generator().manual_seed(seed)
    swiglu = any(".mlp.fc1_g." in k for k in state)
    out: dict[str, torch.Tensor] = {}
    dim = state["cls_token"].shape[-1]
    for key, value in state.items():
        if key.endswith("attn.v_bias"):
            continue
        if key.endswith("attn.q_bias"):
            v_bias = state[key.replace("q_bias", "v_bias")]
            k_bias = torch.randn(value.shape, generator=gen)
            out[key.replace("q_bias", "qkv.bias")] = torch.cat([value, k_bias, v_bias])
            out[key.replace("q_bias", "qkv.bias_mask")] = torch.cat([torch.ones_like(value), torch.zeros_like(value), torch.ones_like(value)])
            continue
        new = key.replace("reg_token", "storage_tokens").replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        if swiglu:
            new = new.replace("mlp.fc1_g", "mlp.w1").replace("mlp.fc1_x", "mlp.w2").replace("mlp.fc2", "mlp.w3")
        out[new] = value
        if key.endswith("attn.qkv.weight") and key.replace("qkv.weight", "q_bias") not in state:
            out[new.replace("weight", "bias")] = torch.full((3 * dim,), float(qkv_bias_value))
            out[new.replace("weight", "bias_mask")] = torch.ones(3 * dim)
    out["mask_token"] = torch.zeros(1, dim)
    out["rope_embed.periods"] = torch.arange(1, dim // 8 + 1, dtype=torch.float32)
    return out


def save_pth(state: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def images(n: int = 3, h: int = 32, w: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def kit():
    """Helpers for teacher tests (fixtures, since test modules cannot import this conftest by name)."""
    from types import SimpleNamespace

    return SimpleNamespace(TINY=dict(TINY), tiny_state=tiny_state, to_meta_layout=to_meta_layout, save_pth=save_pth, images=images)
