"""Weight files: names, checksums, safe reading, lookup order, installing and listing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch

from dinomix_core.io.errors import DinomixInputError
from dinomix_core.models import (
    ChecksumMismatchError,
    MissingWeightsError,
    WeightsFileError,
    add_weights,
    build_teacher,
    find_weights,
    list_weights,
)
from dinomix_core.models import _dinov3
from dinomix_core.models.weights import file_sha256, parse_weights_name, read_state_dict

SMALL = "vit_small_patch16_dinov3"

# Set by _Payload when unpickled: proves a refused checkpoint never ran its code.
UNPICKLED: list[str] = []


def _mark(tag: str) -> None:
    UNPICKLED.append(tag)


class _Payload:
    def __reduce__(self):
        return (_mark, ("payload ran",))


def zero_state(arch: str, dtype: torch.dtype = torch.float32, *, compact: bool = True) -> dict[str, torch.Tensor]:
    """Full-size state dict of ``arch`` with all-zero tensors.

    ``compact``: expanded views of one zero, which ``torch.save`` stores in a few bytes (the
    shapes are what installation checks); otherwise real contiguous tensors (safetensors).
    """
    model = _dinov3.create_vit(arch, device="meta")
    if compact:
        return {k: torch.zeros((), dtype=dtype).expand(v.shape) for k, v in model.state_dict().items()}
    return {k: torch.zeros(v.shape, dtype=dtype) for k, v in model.state_dict().items()}


def with_hash_name(path: Path, stem: str, *, wrong: bool = False) -> Path:
    """Rename ``path`` to Meta's ``<stem>-<sha256[:8]>.pth`` (or a wrong prefix)."""
    prefix = file_sha256(path)[:8]
    if wrong:
        prefix = "".join("0" if c != "0" else "1" for c in prefix)
    target = path.with_name(f"{stem}-{prefix}.pth")
    path.rename(target)
    return target


@pytest.mark.parametrize(
    "relpath, arch, tag, sha, layout",
    [
        ("dinov3_vits16_pretrain_lvd1689m-08c60483.pth", SMALL, "lvd1689m", "08c60483", "meta"),
        ("dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth", "vit_large_patch16_dinov3", "sat493m", "eadcf0ff", "meta"),
        ("dinov3_vith16plus_pretrain_lvd1689m.pth", "vit_huge_plus_patch16_dinov3", "lvd1689m", None, "meta"),
        ("vit_small_patch16_dinov3.lvd1689m.safetensors", SMALL, "lvd1689m", None, "timm"),
        ("vit_base_patch16_dinov3_qkvb.safetensors", "vit_base_patch16_dinov3_qkvb", None, None, "timm"),
        ("vit_small_plus_patch16_dinov3.lvd1689m/model.safetensors", "vit_small_plus_patch16_dinov3", "lvd1689m", None, "timm"),
        ("models--timm--vit_large_patch16_dinov3.lvd1689m/snapshots/abc123/model.safetensors", "vit_large_patch16_dinov3", "lvd1689m", None, "timm"),
    ],
)
def test_file_names_say_arch_tag_and_checksum(relpath, arch, tag, sha, layout):
    parsed = parse_weights_name(Path("/somewhere") / relpath)
    assert (parsed.arch, parsed.tag, parsed.sha256_prefix, parsed.layout) == (arch, tag, sha, layout)


@pytest.mark.parametrize(
    "relpath", ["model.safetensors", "dinov2_vits14_pretrain.pth", "dinov3_vitx99_pretrain_lvd1689m.pth", "vit_small_patch16_dinov3.txt"]
)
def test_unrelated_names_are_not_recognised(relpath):
    assert parse_weights_name(Path("/somewhere/downloads") / relpath) is None


def test_meta_files_serve_both_timm_variants_but_timm_files_only_their_own():
    meta = parse_weights_name("dinov3_vits16_pretrain_lvd1689m-08c60483.pth")
    assert meta.serves(SMALL) and meta.serves(SMALL + "_qkvb") and not meta.serves("vit_base_patch16_dinov3")
    timm_file = parse_weights_name(f"{SMALL}.safetensors")
    assert timm_file.serves(SMALL) and not timm_file.serves(SMALL + "_qkvb")


def test_checksum_in_a_meta_name_is_verified(tmp_path, kit):
    meta = kit.to_meta_layout(kit.tiny_state(SMALL, seed=4))
    good = with_hash_name(kit.save_pth(meta, tmp_path / "a" / "x.pth"), "dinov3_vits16_pretrain_lvd1689m")
    teacher = build_teacher(SMALL, weights=good, **kit.TINY)
    assert teacher.weights_sha256.startswith(good.stem.rsplit("-", 1)[1])
    bad = with_hash_name(kit.save_pth(meta, tmp_path / "b" / "x.pth"), "dinov3_vits16_pretrain_lvd1689m", wrong=True)
    with pytest.raises(ChecksumMismatchError, match="corrupt or a partial download") as info:
        build_teacher(SMALL, weights=bad, **kit.TINY)
    assert str(bad) in str(info.value) and "download it again" in str(info.value)


def test_truncated_or_foreign_files_are_clear_errors_naming_the_file(tmp_path, kit):
    state = kit.tiny_state(SMALL, seed=1)
    pth = kit.save_pth(state, tmp_path / "full.pth")
    st = tmp_path / "full.safetensors"
    safetensors.torch.save_file(state, str(st))
    cases = {
        "cut.pth": pth.read_bytes()[: pth.stat().st_size // 2],
        "cut.safetensors": st.read_bytes()[: st.stat().st_size // 2],
        "notes.pth": b"these are my notes, not a checkpoint\n" * 10,
        "notes.safetensors": b"{not safetensors}",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(WeightsFileError, match="truncated, corrupt or another format") as info:
            read_state_dict(path)
        assert str(path) in str(info.value)
        with pytest.raises(WeightsFileError):
            build_teacher(SMALL, weights=path, **kit.TINY)
    listing = kit.save_pth({"a": 1}, tmp_path / "not_tensors.pth")
    with pytest.raises(WeightsFileError, match="does not hold a state dict"):
        read_state_dict(listing)


def test_checkpoints_with_python_objects_are_refused_unexecuted(tmp_path, kit):
    state = kit.tiny_state(SMALL, seed=1)
    state_with_payload = {"model": state, "extra": _Payload()}
    path = tmp_path / f"{SMALL}.pth"
    torch.save(state_with_payload, path)
    UNPICKLED.clear()
    with pytest.raises(WeightsFileError, match="refusing to load it") as info:
        build_teacher(SMALL, weights=path, **kit.TINY)
    assert str(path) in str(info.value)
    # timm's own loader (the create_model(pretrained=True, file=...) route) refuses it too
    with pytest.raises(Exception, match="weights_only"):
        timm.create_model(SMALL, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kit.TINY)
    assert UNPICKLED == []


def test_missing_weights_error_says_what_where_and_how(user_weights, monkeypatch, tmp_path):
    with pytest.raises(MissingWeightsError) as info:
        build_teacher(SMALL)
    text = str(info.value)
    assert isinstance(info.value, DinomixInputError)
    for needle in (
        "dinov3_vits16_pretrain_lvd1689m-<sha256 prefix>.pth",
        f"{SMALL}.lvd1689m.safetensors",
        "$DINOMIX_WEIGHTS_DIR (not set)",
        str(user_weights),
        "https://github.com/facebookresearch/dinov3",
        "licence",
        f"timm/{SMALL}.lvd1689m",
        "dinomix weights add FILE",
        "--teacher random",
    ):
        assert needle in text, needle
    # weights for another model are pointed out, not silently ignored
    other = tmp_path / "env"
    other.mkdir()
    (other / "dinov3_vitb16_pretrain_lvd1689m.pth").write_bytes(b"x")
    monkeypatch.setenv("DINOMIX_WEIGHTS_DIR", str(other))
    with pytest.raises(MissingWeightsError, match="other models/tags: dinov3_vitb16_pretrain_lvd1689m.pth") as info:
        find_weights(SMALL)
    assert f"$DINOMIX_WEIGHTS_DIR='{other}'" in str(info.value)
    with pytest.raises(MissingWeightsError, match="does not exist"):
        find_weights(SMALL, tmp_path / "nope.pth")


def test_allow_random_falls_back_with_a_warning(kit):
    with pytest.warns(UserWarning, match="random teacher"):
        teacher = build_teacher(SMALL, allow_random=True, seed=2, **kit.TINY)
    assert teacher.is_random and teacher.teacher_id.endswith("random-seed2")


def test_lookup_order_is_explicit_then_env_then_user_folder(tmp_path, user_weights, monkeypatch, kit):
    def put(folder: Path, seed: int) -> Path:
        path = folder / f"{SMALL}.lvd1689m.safetensors"
        folder.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file(kit.tiny_state(SMALL, seed=seed), str(path))
        return path

    in_user = put(user_weights, 1)
    in_env = put(tmp_path / "env", 2)
    explicit = put(tmp_path / "explicit", 3)
    empty_env = tmp_path / "empty"
    empty_env.mkdir()

    assert find_weights(SMALL) == in_user
    monkeypatch.setenv("DINOMIX_WEIGHTS_DIR", os.pathsep.join([str(empty_env), str(in_env.parent)]))
    assert find_weights(SMALL) == in_env
    assert find_weights(SMALL, explicit) == explicit
    assert find_weights(SMALL, explicit.parent) == explicit  # a folder is searched
    teacher = build_teacher(SMALL, **kit.TINY)
    assert teacher.weights_path == in_env and teacher.weights_sha256 == file_sha256(in_env)
    assert build_teacher(SMALL, weights=explicit, **kit.TINY).weights_path == explicit
    monkeypatch.delenv("DINOMIX_WEIGHTS_DIR")
    assert build_teacher(SMALL, **kit.TINY).weights_path == in_user


def test_timm_files_are_preferred_and_other_tags_are_not_picked_by_default(tmp_path, monkeypatch, kit):
    folder = tmp_path / "w"
    folder.mkdir()
    monkeypatch.setenv("DINOMIX_WEIGHTS_DIR", str(folder))
    kit.save_pth(kit.tiny_state("vit_large_patch16_dinov3", seed=1), folder / "dinov3_vitl16_pretrain_sat493m.pth")
    with pytest.raises(MissingWeightsError):
        find_weights("vit_large_patch16_dinov3")
    meta = kit.save_pth(kit.to_meta_layout(kit.tiny_state(SMALL, seed=1)), folder / "dinov3_vits16_pretrain_lvd1689m.pth")
    assert find_weights(SMALL) == meta
    assert find_weights(SMALL + "_qkvb") == meta
    hf = folder / f"{SMALL}.lvd1689m" / "model.safetensors"
    hf.parent.mkdir()
    safetensors.torch.save_file(kit.tiny_state(SMALL, seed=2), str(hf))
    assert find_weights(SMALL) == hf
    assert find_weights(SMALL + "_qkvb") == meta


def test_add_installs_a_verified_copy_and_list_shows_it(tmp_path, user_weights):
    meta = to_meta(zero_state(SMALL))
    src = with_hash_name(save(meta, tmp_path / "dl" / "x.pth"), "dinov3_vits16_pretrain_lvd1689m")
    assert src.stat().st_size < 1_000_000  # compact zero tensors: full shapes, tiny file
    installed = add_weights(src)
    assert installed == user_weights / src.name
    assert installed.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in user_weights.iterdir()) == [src.name]  # no temp files left
    assert find_weights(SMALL) == installed
    [entry] = list_weights()
    path, arch, sha, size = entry
    assert (path, arch, size) == (installed, SMALL, src.stat().st_size)
    assert file_sha256(installed).startswith(sha) and len(sha) == 8
    assert add_weights(installed) == installed  # re-adding the installed file is a no-op


def test_add_refuses_a_bad_checksum_and_leaves_nothing_behind(tmp_path, user_weights):
    src = with_hash_name(save(to_meta(zero_state(SMALL)), tmp_path / "x.pth"), "dinov3_vits16_pretrain_lvd1689m", wrong=True)
    with pytest.raises(ChecksumMismatchError, match="partial download"):
        add_weights(src)
    assert not user_weights.exists() or list(user_weights.iterdir()) == []


def test_add_infers_the_arch_from_tensor_shapes_or_asks_for_it(tmp_path, user_weights, kit):
    src = save(zero_state(SMALL), tmp_path / "download.pth")
    installed = add_weights(src)
    assert installed.name == f"{SMALL}.pth"
    assert find_weights(SMALL) == installed
    tiny = save(kit.tiny_state(SMALL, seed=0), tmp_path / "tiny_download.pth")
    with pytest.raises(WeightsFileError, match="--arch"):
        add_weights(tiny)
    with pytest.raises(WeightsFileError, match="does not fit"):
        add_weights(tiny, arch=SMALL)
    with pytest.raises(DinomixInputError, match="is not a file"):
        add_weights(tmp_path / "nothing.pth")


def test_add_a_hugging_face_download_folder(tmp_path, user_weights):
    arch = "vit_tiny_patch16_dinov3_qkvb"  # the smallest full-size DINOv3 timm has (5.5M parameters)
    tag = _dinov3.default_tag(arch)
    src = tmp_path / f"{arch}.{tag}" / "model.safetensors"
    src.parent.mkdir()
    safetensors.torch.save_file(zero_state(arch, torch.float16, compact=False), str(src))
    installed = add_weights(src)
    assert installed == user_weights / f"{arch}.{tag}.safetensors"
    assert find_weights(arch) == installed
    assert [entry.arch for entry in list_weights()] == [arch]


def to_meta(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta key names for a bias-free timm state (zero fused biases), kept compact."""
    out = {}
    dim = state["cls_token"].shape[-1]
    for key, value in state.items():
        new = key.replace("reg_token", "storage_tokens").replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        out[new] = value
        if key.endswith("attn.qkv.weight"):
            out[new.replace("weight", "bias")] = torch.zeros(()).expand(3 * dim)
    out["mask_token"] = torch.zeros(1, dim)
    return out


def save(state: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def test_listing_by_name_only_finds_the_same_files_without_hashing(tmp_path, user_weights, monkeypatch):
    """The GUI's teacher list: names decide, nothing is hashed (1.1 s for a 1.2 GB ViT-L file)."""
    from dinomix_core.models import weights

    meta = with_hash_name(save(to_meta(zero_state(SMALL)), tmp_path / "dl" / "x.pth"), "dinov3_vits16_pretrain_lvd1689m")
    add_weights(meta)
    add_weights(save(zero_state(SMALL), tmp_path / "download.pth"))  # installed as vit_small_patch16_dinov3.pth
    full = list_weights()

    def no_hashing(_path):
        raise AssertionError("a weight file was hashed")

    monkeypatch.setattr(weights, "file_sha256", no_hashing)
    light = list_weights(by_name_only=True)
    assert [(e.path, e.arch, e.size) for e in light] == [(e.path, e.arch, e.size) for e in full]
    assert sorted(e.sha256 for e in light) == sorted(["", meta.name.split("-")[-1].removesuffix(".pth")])
