"""DINOv3 teacher: tokens, freezing, ids, and loading tiny checkpoints in every supported layout."""

from __future__ import annotations

import pytest
import safetensors.torch
import timm
import torch
import torch.nn.functional as F

from dinomix_core.io.errors import DinomixInputError
from dinomix_core.models import WeightsFileError, build_teacher
from dinomix_core.models.weights import file_sha256

SMALL = "vit_small_patch16_dinov3"


def test_random_teacher_is_explicit_deterministic_and_says_random(kit):
    a = build_teacher(SMALL, weights="random", seed=0, **kit.TINY)
    b = build_teacher(SMALL, weights="random", seed=0, **kit.TINY)
    c = build_teacher(SMALL, weights="random", seed=1, **kit.TINY)
    assert a.is_random and a.weights_sha256 is None and a.weights_path is None
    assert "random" in a.teacher_id and "seed0" in a.teacher_id
    assert a.teacher_id == b.teacher_id != c.teacher_id
    # arch overrides are part of the id: a tiny teacher never shares a cache with a real one
    assert "depth=2" in a.teacher_id and "embed_dim=32" in a.teacher_id
    x = kit.images()
    assert torch.equal(a.encode(x), b.encode(x))
    assert not torch.allclose(a.encode(x), c.encode(x))
    # building a seeded teacher leaves the global RNG alone
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_teacher(SMALL, weights="random", seed=5, **kit.TINY)
    assert torch.equal(torch.rand(3), expected)


def test_encode_returns_unit_patch_tokens_on_the_patch_grid(kit):
    teacher = build_teacher(SMALL, weights="random", **kit.TINY)
    assert teacher.embed_dim == 32 and teacher.patch_size == 16 and teacher.num_prefix_tokens == 5
    x = kit.images(n=5, h=32, w=64)
    tokens = teacher.encode(x, batch_size=2)
    assert tokens.shape == (5, 32, 2, 4)
    assert tokens.dtype == torch.float32 and tokens.device == x.device
    assert torch.allclose(tokens.norm(dim=1), torch.ones(5, 2, 4), atol=1e-5)
    # batching does not change the result, and the grid matches timm's own patch tokens
    assert torch.allclose(tokens, teacher.encode(x, batch_size=5), atol=1e-6)
    with torch.no_grad():
        raw = teacher.model.forward_features(x)[:, 5:, :]
    expected = F.normalize(raw, dim=-1).reshape(5, 2, 4, 32).permute(0, 3, 1, 2)
    assert torch.allclose(tokens, expected, atol=1e-6)
    half = teacher.encode(x, out_dtype=torch.float16)
    assert half.dtype == torch.float16 and torch.allclose(half.float(), tokens, atol=2e-3)
    assert teacher.mean == pytest.approx((0.485, 0.456, 0.406)) and teacher.std == pytest.approx((0.229, 0.224, 0.225))


def test_encode_rejects_sizes_off_the_patch_grid(kit):
    teacher = build_teacher(SMALL, weights="random", **kit.TINY)
    with pytest.raises(ValueError, match="multiples of the patch size 16"):
        teacher.encode(kit.images(h=40, w=32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        teacher.encode(torch.zeros(1, 1, 32, 32))


def test_encode_under_bf16_autocast_stays_close_to_float32(kit):
    teacher = build_teacher(SMALL, weights="random", **kit.TINY)
    x = kit.images()
    full = teacher.encode(x)
    bf16 = teacher.encode(x, amp_dtype=torch.bfloat16)
    assert bf16.dtype == torch.float32
    assert torch.allclose(bf16.norm(dim=1), torch.ones_like(bf16[:, 0]), atol=1e-5)
    assert F.cosine_similarity(full, bf16, dim=1).min() > 0.95


def test_teacher_is_frozen_and_stays_in_eval(kit):
    teacher = build_teacher(SMALL, weights="random", **kit.TINY)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert not teacher.training and not teacher.model.training
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    parent = torch.nn.ModuleDict({"teacher": teacher, "head": torch.nn.Linear(2, 2)})
    parent.train()
    assert parent["head"].training and not teacher.training and not teacher.model.training


def test_tokens_are_ordinary_tensors_usable_in_a_loss(kit):
    teacher = build_teacher(SMALL, weights="random", **kit.TINY)
    x = kit.images(n=2)
    tokens = teacher.encode(x)
    assert not tokens.is_inference() and not tokens.requires_grad
    student = torch.nn.Parameter(torch.randn_like(tokens))
    loss = (1 - F.cosine_similarity(student, tokens, dim=1)).mean()
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_timm_layout_files_round_trip_exactly(tmp_path, kit, fmt):
    state = kit.tiny_state(SMALL, seed=11)
    path = tmp_path / f"{SMALL}.lvd1689m.{fmt}"
    if fmt == "safetensors":
        safetensors.torch.save_file(state, str(path))
    else:
        torch.save(state, path)
    teacher = build_teacher(SMALL, weights=path, **kit.TINY)
    assert not teacher.is_random
    assert teacher.weights_sha256 == file_sha256(path)
    assert teacher.teacher_id.endswith(file_sha256(path)[:12]) and "random" not in teacher.teacher_id
    reference = timm.create_model(SMALL, **kit.TINY)
    reference.load_state_dict(state)
    for key, value in teacher.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    x = kit.images()
    with torch.no_grad():
        expected = F.normalize(reference.eval().forward_features(x)[:, 5:], dim=-1)
    assert torch.equal(teacher.encode(x), expected.reshape(3, 2, 3, 32).permute(0, 3, 1, 2))


@pytest.mark.parametrize(
    "arch, bias",
    [
        ("vit_small_patch16_dinov3", 0.0),  # Meta's zero fused bias, dropped by the plain variant
        ("vit_small_patch16_dinov3_qkvb", None),  # real q/v biases split out, masked k bias dropped
        ("vit_small_plus_patch16_dinov3", 0.0),  # SwiGLU: Meta's w1/w2/w3 names
    ],
)
def test_meta_layout_loads_through_timms_filter_to_identical_tokens(tmp_path, kit, arch, bias):
    state = kit.tiny_state(arch, seed=21)
    meta = kit.to_meta_layout(state, qkv_bias_value=bias)
    assert "storage_tokens" in meta and not any(k.startswith("reg_token") for k in meta)
    short = {"vit_small_patch16_dinov3": "vits16", "vit_small_patch16_dinov3_qkvb": "vits16", "vit_small_plus_patch16_dinov3": "vits16plus"}[arch]
    path = kit.save_pth(meta, tmp_path / f"dinov3_{short}_pretrain_lvd1689m.pth")
    from_meta = build_teacher(arch, weights=path, **kit.TINY)
    path_timm = tmp_path / f"{arch}.safetensors"
    safetensors.torch.save_file(state, str(path_timm))
    from_timm = build_teacher(arch, weights=path_timm, **kit.TINY)
    x = kit.images()
    assert torch.equal(from_meta.encode(x), from_timm.encode(x))
    assert from_meta.teacher_id != from_timm.teacher_id  # different files, different ids


def test_timms_own_file_loader_agrees_and_never_touches_the_hub(tmp_path, kit, monkeypatch):
    """The documented timm route (pretrained=True + file overlay) is offline and equivalent."""
    import timm.models._builder as builder

    def no_hub(*args, **kwargs):
        raise AssertionError("hub access attempted")

    for fn in ("load_state_dict_from_hf", "download_cached_file", "load_state_dict_from_url", "load_custom_from_hf"):
        if hasattr(builder, fn):
            monkeypatch.setattr(builder, fn, no_hub)
    arch = "vit_small_patch16_dinov3_qkvb"
    meta = kit.to_meta_layout(kit.tiny_state(arch, seed=5))
    path = kit.save_pth(meta, tmp_path / "dinov3_vits16_pretrain_lvd1689m.pth")
    via_timm = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kit.TINY).eval()
    ours = build_teacher(arch, weights=path, **kit.TINY)
    for key, value in ours.model.state_dict().items():
        assert torch.equal(value, via_timm.state_dict()[key]), key


def test_meta_biases_that_are_not_zero_need_the_qkvb_variant(tmp_path, kit):
    state = kit.tiny_state(SMALL, seed=3)
    path = kit.save_pth(kit.to_meta_layout(state, qkv_bias_value=0.3), tmp_path / "dinov3_vits16_pretrain_lvd1689m.pth")
    with pytest.raises(WeightsFileError, match="qkvb") as info:
        build_teacher(SMALL, weights=path, **kit.TINY)
    assert path.name in str(info.value)
    # the _qkvb variant keeps them and loads
    build_teacher(SMALL + "_qkvb", weights=path, **kit.TINY)


def test_weights_for_another_size_are_refused_naming_the_file(tmp_path, kit):
    state = kit.tiny_state(SMALL, seed=2)
    path = tmp_path / "download.safetensors"
    safetensors.torch.save_file(state, str(path))
    with pytest.raises(WeightsFileError, match="does not fit") as info:
        build_teacher(SMALL, weights=path, depth=2, embed_dim=64, num_heads=2)
    assert str(path) in str(info.value) and "wrong shape" in str(info.value)
    with pytest.raises(WeightsFileError, match="missing tensor"):
        build_teacher(SMALL, weights=path, depth=3, embed_dim=32, num_heads=2)


def test_a_file_named_for_another_arch_is_refused_before_loading(tmp_path, kit):
    path = tmp_path / "vit_base_patch16_dinov3.lvd1689m.safetensors"
    safetensors.torch.save_file(kit.tiny_state(SMALL, seed=2), str(path))
    with pytest.raises(WeightsFileError, match="vit_base_patch16_dinov3"):
        build_teacher(SMALL, weights=path, **kit.TINY)


def test_unknown_teacher_name_lists_the_choices():
    with pytest.raises(DinomixInputError, match="vit_small_patch16_dinov3"):
        build_teacher("vit_small_patch14_dinov2", weights="random")
