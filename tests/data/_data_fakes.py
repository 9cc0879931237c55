"""Small stand-ins shared by the data tests: a counting fake teacher and synthetic CT cases."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F


class CountingTeacher:
    """Deterministic teacher with DinoTeacher's interface that counts ``encode`` calls.

    Tokens: mean of each 16x16 patch per input channel, mixed to ``embed_dim`` channels by a
    fixed matrix, L2-normalised over channels, so they depend on the pixels under the patch.
    """

    patch_size = 16
    is_random = True

    def __init__(self, teacher_id: str = "fake-teacher", embed_dim: int = 6):
        self.teacher_id = teacher_id
        self.embed_dim = embed_dim
        self.calls = 0
        self.slices = 0
        gen = torch.Generator().manual_seed(0)
        self._mix = torch.randn(embed_dim, 3, generator=gen)
        self._bias = torch.randn(embed_dim, generator=gen)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        assert images.ndim == 4 and images.shape[1] == 3
        assert images.shape[-1] % 16 == 0 and images.shape[-2] % 16 == 0
        self.calls += 1
        self.slices += images.shape[0]
        pooled = F.avg_pool2d(images, 16)  # (N, 3, h, w)
        tokens = torch.einsum("ck,nkhw->nchw", self._mix, pooled) + self._bias.view(1, -1, 1, 1)
        return F.normalize(tokens, dim=1)


def synthetic_ct(shape=(16, 32, 32), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(HU int16, label uint8) of a toy abdomen: air, a body, a big, a medium and a tiny organ."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    zz, yy, xx = np.meshgrid(np.arange(z), np.arange(y), np.arange(x), indexing="ij")
    hu = np.full(shape, -1000.0)
    body = ((yy - y / 2) / (0.45 * y)) ** 2 + ((xx - x / 2) / (0.45 * x)) ** 2 <= 1
    hu[body] = 20.0
    label = np.zeros(shape, dtype=np.uint8)
    big = body & (xx < x // 2) & (yy > y // 4)
    label[big], hu[big] = 1, 60.0
    medium = (np.abs(zz - z // 2) < max(2, z // 4)) & (np.abs(yy - y // 3) < 3) & (np.abs(xx - 3 * x // 4) < 3)
    label[medium], hu[medium] = 2, 150.0
    tiny = (zz == z - 3) & (yy == 2 * y // 3) & (np.abs(xx - 3 * x // 4) <= 1)
    label[tiny], hu[tiny] = 3, 250.0
    hu += rng.normal(0, 5, shape)
    return np.round(hu).astype(np.int16), label


def make_case(case_id: str, image: np.ndarray, label=None, tokens=None) -> SimpleNamespace:
    """A minimal stand-in for LoadedCase (what PatchSampler and TrainBatches read)."""
    return SimpleNamespace(case_id=case_id, image=image, label=label, tokens=tokens)


def coordinate_tokens(shape, stride: int) -> np.ndarray:
    """float16 tokens (z, 4, h, w) whose channels are (z, i, j, 1) of their own cell."""
    z, y, x = shape
    h, w = -(-y // stride), -(-x // stride)
    zz, ii, jj = np.meshgrid(np.arange(z), np.arange(h), np.arange(w), indexing="ij")
    return np.stack([zz, ii, jj, np.ones_like(zz)], axis=1).astype(np.float16)
