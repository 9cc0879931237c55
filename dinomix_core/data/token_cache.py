"""Frozen-teacher tokens, computed once per volume and kept in memory and on disk.

The DINOv3 teacher never trains and is deterministic, so its tokens are a pure function of
(voxels, teacher, preprocessing). The cache key hashes exactly those; training then pays a
teacher forward once per volume instead of once per step. Token maps are stored as float16
(values are L2-normalised, so within [-1, 1]) in plain ``.npy`` files: loading never unpickles,
and files are written atomically so an interrupted run cannot leave a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from dinomix_core.data.preprocess import (
    DEFAULT_STRIDE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TEACHER_PREPROCESS_VERSION,
    TEACHER_WINDOW,
    check_stride,
    teacher_slices,
    token_grid,
)
from dinomix_core.engine.events import check_cancel
from dinomix_core.io.atomic import atomic_path

#: Bumped when the on-disk layout changes.
CACHE_FORMAT_VERSION = 1

ProgressFn = Callable[[int, int], None]


class Teacher(Protocol):
    """What the cache needs from a teacher (``dinomix_core.models.teacher.DinoTeacher``).

    Optional ``mean`` / ``std`` attributes give the input normalisation its weights expect
    (ImageNet when absent).
    """

    teacher_id: str
    embed_dim: int
    patch_size: int

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...


@dataclass
class CacheStats:
    """Counters since the cache was created: where each ``get`` was answered from."""

    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    corrupt: int = 0

    @property
    def hits(self) -> int:
        return self.memory_hits + self.disk_hits


def cache_key(
    volume_array_hu: np.ndarray,
    teacher_id: str,
    *,
    window: tuple[float, float],
    stride: int,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> str:
    """sha256 over the voxels (bytes, shape, dtype), the teacher id and the preprocessing."""
    array = np.ascontiguousarray(volume_array_hu)
    digest = hashlib.sha256()
    digest.update(memoryview(array).cast("B"))
    header = {
        "shape": list(array.shape),
        "dtype": array.dtype.str,
        "teacher": str(teacher_id),
        "window": [float(v) for v in window],
        "stride": int(stride),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "preprocess": TEACHER_PREPROCESS_VERSION,
        "format": CACHE_FORMAT_VERSION,
    }
    digest.update(json.dumps(header, sort_keys=True).encode("utf-8"))
    return digest.hexdigest()


def compute_tokens(
    volume_array_hu: np.ndarray,
    teacher: Teacher,
    *,
    window: tuple[float, float] = TEACHER_WINDOW,
    stride: int = DEFAULT_STRIDE,
    batch_slices: int = 8,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Teacher tokens of every axial slice: (z, y, x) HU -> float16 (z, C, h, w), no caching.

    Slices go through the teacher ``batch_slices`` at a time to bound memory; ``progress`` is
    called with (slices done, total) after each batch. ``cancel()`` is checked before every
    batch: True raises :class:`~dinomix_core.engine.events.Cancelled`.
    """
    array = np.asarray(volume_array_hu)
    if array.ndim != 3:
        raise ValueError(f"teacher tokens need a (z, y, x) volume, got shape {array.shape}")
    stride = check_stride(stride)
    if int(getattr(teacher, "patch_size", 16)) != 16:
        raise ValueError(f"teacher {teacher.teacher_id!r} has patch size {teacher.patch_size}; 16 is required")
    z = array.shape[0]
    h, w = token_grid(array.shape[1:], stride)
    out = np.empty((z, int(teacher.embed_dim), h, w), dtype=np.float16)
    device = _teacher_device(teacher)
    mean, std = _normalisation(teacher)
    step = max(1, int(batch_slices))
    with torch.inference_mode():
        for start in range(0, z, step):
            check_cancel(cancel, f"computing teacher tokens ({start} of {z} slices)")
            stop = min(z, start + step)
            images = teacher_slices(array[start:stop], window=window, stride=stride, device=device, mean=mean, std=std)
            tokens = teacher.encode(images)
            expected = (stop - start, out.shape[1], h, w)
            if tuple(tokens.shape) != expected:
                raise RuntimeError(
                    f"teacher {teacher.teacher_id!r} returned tokens of shape {tuple(tokens.shape)}, "
                    f"expected {expected}"
                )
            out[start:stop] = tokens.detach().to("cpu", torch.float32).numpy().astype(np.float16)
            if progress is not None:
                progress(stop, z)
    return out


class TokenCache:
    """Teacher tokens per volume: an in-memory LRU of ``memory_items`` entries over a folder.

    ``cache_dir=None`` keeps tokens in memory only. With ``mmap=True`` disk entries are
    memory-mapped read-only, so large token maps cost page cache rather than process memory.
    Returned arrays are read-only and shared: copy before writing into them.
    """

    def __init__(self, cache_dir: str | Path | None, memory_items: int = 8, *, mmap: bool = False):
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.memory_items = max(0, int(memory_items))
        self.mmap = bool(mmap)
        self.cache_stats = CacheStats()
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.RLock()

    def path_for(self, key: str) -> Path | None:
        """The file that holds (or would hold) the entry ``key``."""
        return None if self.cache_dir is None else self.cache_dir / f"tokens-{key}.npy"

    def get(
        self,
        volume_array_hu: np.ndarray,
        teacher: Teacher,
        *,
        window: tuple[float, float] = TEACHER_WINDOW,
        stride: int = DEFAULT_STRIDE,
        batch_slices: int = 8,
        progress: ProgressFn | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Tokens for a (z, y, x) HU volume: float16 (z, C, h, w), from memory, disk or the teacher.

        ``progress`` / ``cancel``: as in :func:`compute_tokens` (only called when the tokens are
        computed). A cancelled computation stores nothing.
        """
        array = np.asarray(volume_array_hu)
        stride = check_stride(stride)
        mean, std = _normalisation(teacher)
        key = cache_key(array, teacher.teacher_id, window=window, stride=stride, mean=mean, std=std)
        expected = (array.shape[0], int(teacher.embed_dim), *token_grid(array.shape[1:], stride))
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                self.cache_stats.memory_hits += 1
                return self._memory[key]
            tokens = self._load(key, expected)
            if tokens is not None:
                self.cache_stats.disk_hits += 1
            else:
                self.cache_stats.misses += 1
                tokens = compute_tokens(
                    array, teacher, window=window, stride=stride, batch_slices=batch_slices, progress=progress,
                    cancel=cancel,
                )
                tokens = self._store(key, tokens)
            tokens.flags.writeable = False
            self._remember(key, tokens)
            return tokens

    def clear_memory(self) -> None:
        with self._lock:
            self._memory.clear()

    def _remember(self, key: str, tokens: np.ndarray) -> None:
        if self.memory_items == 0:
            return
        self._memory[key] = tokens
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_items:
            self._memory.popitem(last=False)

    def _load(self, key: str, expected: tuple[int, ...]) -> np.ndarray | None:
        path = self.path_for(key)
        if path is None or not path.exists():
            return None
        try:
            tokens = np.load(path, allow_pickle=False, mmap_mode="r" if self.mmap else None)
            if tokens.dtype != np.float16 or tuple(tokens.shape) != expected:
                raise ValueError(f"holds {tokens.dtype} {tuple(tokens.shape)}, expected float16 {expected}")
        except (ValueError, OSError, EOFError) as exc:
            self.cache_stats.corrupt += 1
            warnings.warn(f"token cache entry {path} is unreadable ({exc}); recomputing it", RuntimeWarning, stacklevel=3)
            return None
        return tokens

    def _store(self, key: str, tokens: np.ndarray) -> np.ndarray:
        path = self.path_for(key)
        if path is None:
            return tokens
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(tokens), allow_pickle=False)
        if self.mmap:
            return np.load(path, allow_pickle=False, mmap_mode="r")
        return tokens


def _normalisation(teacher: Teacher) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = tuple(float(v) for v in getattr(teacher, "mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in getattr(teacher, "std", IMAGENET_STD))
    return mean, std


def _teacher_device(teacher: Teacher) -> torch.device:
    device = getattr(teacher, "device", None)
    if device is not None:
        return torch.device(device)
    parameters = getattr(teacher, "parameters", None)
    if callable(parameters):
        for param in parameters():
            return param.device
    return torch.device("cpu")
