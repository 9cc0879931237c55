"""Teacher-token cache: hits and misses in memory and on disk, keys, atomic files, corruption."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from _data_fakes import CountingTeacher, synthetic_ct
from dinomix_core.data.preprocess import token_grid
from dinomix_core.data.token_cache import TokenCache, cache_key, compute_tokens


@pytest.fixture()
def volume():
    hu, _ = synthetic_ct((16, 32, 32))
    return hu


def test_memory_hit_skips_the_teacher(volume):
    teacher = CountingTeacher()
    cache = TokenCache(None)
    first = cache.get(volume, teacher, stride=8)
    assert first.dtype == np.float16
    assert first.shape == (16, teacher.embed_dim, *token_grid(volume.shape[1:], 8))
    calls = teacher.calls
    assert calls >= 1 and teacher.slices == 16
    second = cache.get(volume.copy(), teacher, stride=8)
    assert teacher.calls == calls
    np.testing.assert_array_equal(first, second)
    assert (cache.cache_stats.misses, cache.cache_stats.memory_hits, cache.cache_stats.hits) == (1, 1, 1)
    assert not second.flags.writeable


def test_tokens_are_unit_vectors_that_depend_on_content(volume):
    tokens = TokenCache(None).get(volume, CountingTeacher(), stride=8).astype(np.float32)
    np.testing.assert_allclose(np.linalg.norm(tokens, axis=1), 1.0, atol=2e-3)
    # Air (corner) and soft tissue (centre) get different tokens.
    assert not np.allclose(tokens[8, :, 0, 0], tokens[8, :, 2, 2], atol=1e-2)


def test_disk_hit_from_a_new_cache_instance(tmp_path, volume):
    teacher = CountingTeacher()
    first = TokenCache(tmp_path).get(volume, teacher, stride=8)
    calls = teacher.calls
    fresh = TokenCache(tmp_path)
    second = fresh.get(volume, teacher, stride=8)
    assert teacher.calls == calls
    assert fresh.cache_stats.disk_hits == 1 and fresh.cache_stats.misses == 0
    np.testing.assert_array_equal(first, second)
    again = fresh.get(volume, teacher, stride=8)
    assert fresh.cache_stats.memory_hits == 1 and teacher.calls == calls
    np.testing.assert_array_equal(first, again)


def test_mmap_mode_returns_read_only_maps(tmp_path, volume):
    teacher = CountingTeacher()
    computed = TokenCache(tmp_path, mmap=True).get(volume, teacher, stride=8)
    loaded = TokenCache(tmp_path, mmap=True).get(volume, teacher, stride=8)
    assert isinstance(loaded, np.memmap) and not loaded.flags.writeable
    np.testing.assert_array_equal(np.asarray(computed), np.asarray(loaded))


def test_key_changes_with_every_input(volume):
    base = cache_key(volume, "t", window=(350, 40), stride=8)
    assert base == cache_key(volume.copy(), "t", window=(350.0, 40.0), stride=8)
    changed = volume.copy()
    changed[3, 4, 5] += 1
    others = [
        cache_key(changed, "t", window=(350, 40), stride=8),
        cache_key(volume, "t2", window=(350, 40), stride=8),
        cache_key(volume, "t", window=(400, 40), stride=8),
        cache_key(volume, "t", window=(350, 50), stride=8),
        cache_key(volume, "t", window=(350, 40), stride=4),
        cache_key(volume.astype(np.float32), "t", window=(350, 40), stride=8),
        cache_key(volume.reshape(32, 16, 32), "t", window=(350, 40), stride=8),
        cache_key(volume, "t", window=(350, 40), stride=8, mean=(0.5, 0.5, 0.5)),
        cache_key(volume, "t", window=(350, 40), stride=8, std=(0.5, 0.5, 0.5)),
    ]
    assert len({base, *others}) == len(others) + 1


def test_window_stride_and_teacher_changes_recompute(tmp_path, volume):
    teacher = CountingTeacher()
    cache = TokenCache(tmp_path)
    a = cache.get(volume, teacher, stride=8)
    b = cache.get(volume, teacher, stride=8, window=(1500, 300))
    c = cache.get(volume, teacher, stride=16)
    d = cache.get(volume, CountingTeacher(teacher_id="other"), stride=8)
    assert cache.cache_stats.misses == 4 and cache.cache_stats.hits == 0
    assert c.shape[-2:] == (2, 2) and a.shape[-2:] == (4, 4)
    assert not np.array_equal(a, b)
    assert len(list(tmp_path.glob("tokens-*.npy"))) == 4
    np.testing.assert_array_equal(a, d)  # same weights, different id: still a separate entry


def test_teacher_normalisation_is_used_and_keyed(volume):
    imagenet = CountingTeacher()
    other = CountingTeacher()
    other.mean, other.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    cache = TokenCache(None)
    a = cache.get(volume, imagenet, stride=8)
    b = cache.get(volume, other, stride=8)
    assert cache.cache_stats.misses == 2
    assert not np.array_equal(a, b)


def test_memory_lru_evicts_oldest(volume):
    teacher = CountingTeacher()
    cache = TokenCache(None, memory_items=1)
    other = volume[::-1].copy()
    cache.get(volume, teacher, stride=8)
    cache.get(other, teacher, stride=8)
    cache.get(volume, teacher, stride=8)  # evicted by ``other``: recomputed
    cache.get(volume, teacher, stride=8)
    assert cache.cache_stats.misses == 3 and cache.cache_stats.memory_hits == 1


def test_writes_are_atomic_and_leave_no_temp_files(tmp_path, volume):
    cache = TokenCache(tmp_path / "cache")
    cache.get(volume, CountingTeacher(), stride=8)
    names = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(names) == 1 and names[0].startswith("tokens-") and names[0].endswith(".npy")

    class Failing(CountingTeacher):
        def encode(self, images):
            if self.calls >= 1:
                raise RuntimeError("teacher crashed")
            return super().encode(images)

    with pytest.raises(RuntimeError, match="teacher crashed"):
        cache.get(volume[:, ::-1].copy(), Failing(), stride=8, batch_slices=4)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == names


def test_stored_file_is_plain_npy(tmp_path, volume):
    teacher = CountingTeacher()
    tokens = TokenCache(tmp_path).get(volume, teacher, stride=8)
    path = TokenCache(tmp_path).path_for(cache_key(volume, teacher.teacher_id, window=(350, 40), stride=8))
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), tokens)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "pickled", "wrong-shape"])
def test_corrupt_entry_is_recomputed_and_replaced(tmp_path, volume, damage):
    teacher = CountingTeacher()
    good = TokenCache(tmp_path).get(volume, teacher, stride=8)
    (path,) = tmp_path.glob("tokens-*.npy")
    if damage == "garbage":
        path.write_bytes(b"not a numpy file at all" * 10)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "pickled":
        np.save(path, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    else:
        np.save(path, np.zeros((2, 2), dtype=np.float16))
    calls = teacher.calls
    cache = TokenCache(tmp_path)
    with pytest.warns(RuntimeWarning, match="recomputing"):
        again = cache.get(volume, teacher, stride=8)
    assert teacher.calls > calls
    assert cache.cache_stats.corrupt == 1 and cache.cache_stats.misses == 1
    np.testing.assert_array_equal(again, good)
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), good)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TokenCache(tmp_path).get(volume, teacher, stride=8)


def test_slice_batches_and_progress(volume):
    teacher = CountingTeacher()
    seen = []
    whole = compute_tokens(volume, CountingTeacher(), stride=8, batch_slices=16)
    batched = compute_tokens(volume, teacher, stride=8, batch_slices=5, progress=lambda d, t: seen.append((d, t)))
    assert teacher.calls == 4
    assert seen == [(5, 16), (10, 16), (15, 16), (16, 16)]
    np.testing.assert_array_equal(whole, batched)


def test_teacher_with_wrong_output_shape_is_reported(volume):
    class Wrong(CountingTeacher):
        def encode(self, images):
            return super().encode(images)[..., :-1]

    with pytest.raises(RuntimeError, match="shape"):
        TokenCache(None).get(volume, Wrong(), stride=8)


def test_real_random_teacher_through_the_cache(tmp_path, volume):
    teacher_module = pytest.importorskip("dinomix_core.models.teacher")
    torch.manual_seed(0)
    teacher = teacher_module.build_teacher(
        "vit_small_patch16_dinov3", weights="random", depth=1, embed_dim=32, num_heads=2
    )
    small = volume[:4]
    cache = TokenCache(tmp_path)
    tokens = cache.get(small, teacher, stride=8)
    assert tokens.dtype == np.float16 and tokens.shape == (4, teacher.embed_dim, 4, 4)
    np.testing.assert_allclose(np.linalg.norm(tokens.astype(np.float32), axis=1), 1.0, atol=5e-3)
    np.testing.assert_array_equal(tokens, compute_tokens(small, teacher, stride=8))  # deterministic

    def refuse(images):
        raise AssertionError("a disk hit must not run the teacher")

    teacher.encode = refuse
    again = TokenCache(tmp_path).get(small, teacher, stride=8)
    np.testing.assert_array_equal(tokens, again)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_teacher_matches_cpu_teacher(volume):
    teacher_module = pytest.importorskip("dinomix_core.models.teacher")
    arch = dict(depth=1, embed_dim=32, num_heads=2)
    cpu = teacher_module.build_teacher("vit_small_patch16_dinov3", weights="random", **arch)
    gpu = teacher_module.build_teacher("vit_small_patch16_dinov3", weights="random", device="cuda", **arch)
    a = compute_tokens(volume[:6], cpu, stride=8).astype(np.float32)
    b = compute_tokens(volume[:6], gpu, stride=8).astype(np.float32)
    assert b.dtype == np.float32 and b.shape == a.shape
    cosine = (a * b).sum(axis=1)
    assert cosine.min() > 0.999
