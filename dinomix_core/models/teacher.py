"""The frozen DINOv3 teacher of FKD: axial slices in, L2-normalised patch tokens out.

The teacher never trains and is deterministic, so the data layer computes its tokens once
per volume and caches them under ``teacher_id``, which names the architecture and the exact
weights (sha256) or says ``random``: a cache built with one teacher is never read with another.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dinomix_core.models import _dinov3
from dinomix_core.models.errors import MissingWeightsError, WeightsFileError
from dinomix_core.models.weights import find_weights, parse_weights_name, read_state_dict, verify_checksum

DEFAULT_TEACHER = _dinov3.DEFAULT_TEACHER
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._=+-]")


class DinoTeacher(nn.Module):
    """A frozen timm DINOv3 ViT behind one method, :meth:`encode`.

    Attributes: ``name`` (timm arch), ``embed_dim``, ``patch_size``, ``teacher_id``,
    ``weights_sha256`` (None when random), ``weights_path``, ``is_random``, and ``mean`` /
    ``std``: the per-channel normalisation the weights expect (ImageNet for lvd1689m).
    Parameters never require grad and the module stays in eval mode, whatever ``train()``
    is asked: dropout or a stray optimiser step must not change the tokens behind the cache.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        teacher_id: str,
        weights_sha256: str | None,
        weights_path: Path | None,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.teacher_id = teacher_id
        self.weights_sha256 = weights_sha256
        self.weights_path = weights_path
        self.is_random = weights_sha256 is None
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.embed_dim = int(model.embed_dim)
        self.patch_size = int(model.patch_embed.patch_size[0])
        self.num_prefix_tokens = int(model.num_prefix_tokens)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "DinoTeacher":
        """Stays in eval mode: the teacher is frozen (see class docstring)."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images)

    def encode(
        self,
        images: torch.Tensor,
        *,
        batch_size: int = 32,
        amp_dtype: torch.dtype | None = None,
        out_dtype: torch.dtype = torch.float32,
        out_device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Patch tokens of 2D images: (N, 3, H, W) -> (N, embed_dim, H/16, W/16), unit L2 norm per token.

        Args:
            images: float, normalised with ``mean``/``std``; H and W multiples of ``patch_size``.
                Moved to the teacher's device ``batch_size`` images at a time.
            amp_dtype: e.g. ``torch.bfloat16`` to run the ViT under autocast (fast on GPUs);
                None runs in float32. Tokens are normalised in float32 either way.
            out_dtype, out_device: of the result (default float32 on ``images``' device), so
                a GPU teacher can fill a CPU float16 cache without holding it on the GPU.

        The CLS and register tokens are dropped. The ViT runs under ``torch.inference_mode``;
        the result is an ordinary tensor (unless the caller is itself in inference mode), so
        losses may use it directly.
        """
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"teacher input must be float (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        n, _, height, width = images.shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"teacher input H, W = {height}, {width} must be multiples of the patch size {p}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        h, w = height // p, width // p
        out = torch.empty(
            (n, self.embed_dim, h, w), dtype=out_dtype, device=images.device if out_device is None else out_device
        )
        device = self.device
        for start in range(0, n, batch_size):
            chunk = images[start : start + batch_size]
            with torch.inference_mode():
                tokens = self._tokens(chunk.to(device=device, dtype=torch.float32), amp_dtype)
                grid = tokens.reshape(chunk.shape[0], h, w, self.embed_dim).permute(0, 3, 1, 2)
            out[start : start + chunk.shape[0]].copy_(grid)
        return out

    def _tokens(self, x: torch.Tensor, amp_dtype: torch.dtype | None) -> torch.Tensor:
        """(b, 3, H, W) -> (b, h*w, C) normalised patch tokens, prefix tokens dropped."""
        if amp_dtype is None:
            context: Any = contextlib.nullcontext()
        else:
            context = torch.autocast(device_type=x.device.type, dtype=amp_dtype)
        with context:
            tokens = self.model.forward_features(x)
        expected = self.num_prefix_tokens + (x.shape[-2] // self.patch_size) * (x.shape[-1] // self.patch_size)
        if tokens.shape[1] != expected:
            raise RuntimeError(f"{self.name} returned {tokens.shape[1]} tokens, expected {expected}")
        return F.normalize(tokens[:, self.num_prefix_tokens :, :].float(), dim=-1)


def build_teacher(
    name: str = DEFAULT_TEACHER,
    weights: str | os.PathLike | None = "auto",
    *,
    allow_random: bool = False,
    seed: int = 0,
    device: torch.device | str | None = None,
    **arch_overrides: Any,
) -> DinoTeacher:
    """Build the frozen teacher ``name`` (a timm DINOv3 ViT) with local weights.

    Args:
        weights: ``"auto"`` (or None) searches ``$DINOMIX_WEIGHTS_DIR`` then the user folder;
            a path (file or folder) is used as given; ``"random"`` builds a randomly
            initialised teacher from ``seed`` (tests and demos only: no foundational knowledge).
        allow_random: with ``"auto"``, fall back to a random teacher (with a warning) instead
            of raising MissingWeightsError when no weights are found.
        device: where the teacher lives (default CPU).
        arch_overrides: timm model options (``depth=2, embed_dim=64, num_heads=2``) that build
            a smaller model of the same architecture, for tests; they are part of ``teacher_id``.

    Raises MissingWeightsError (no file; the message says where to get one and where to put
    it) and WeightsFileError (corrupt, unsafe, wrong checksum or wrong architecture).
    """
    _dinov3.check_arch(name)
    path: Path | None = None
    if not (isinstance(weights, str) and weights == "random"):
        explicit = None if weights is None or (isinstance(weights, str) and weights == "auto") else weights
        try:
            path = find_weights(name, explicit)
        except MissingWeightsError as exc:
            if explicit is not None or not allow_random:
                raise
            warnings.warn(f"{exc} Falling back to a random teacher (seed {seed}).", UserWarning, stacklevel=2)
    label = _arch_label(name, arch_overrides)
    if path is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _dinov3.create_vit(name, **arch_overrides)
        mean, std = _dinov3.normalisation(name, None)
        teacher = DinoTeacher(
            model, name=name, teacher_id=f"{label}-random-seed{seed}", weights_sha256=None, weights_path=None, mean=mean, std=std
        )
    else:
        parsed = parse_weights_name(path)
        if parsed is not None and not parsed.serves(name):
            raise WeightsFileError(
                path,
                f"is named as weights for {parsed.arch!r}, but the teacher is {name!r}.",
                f"use --teacher {parsed.arch} or the weights of {name}.",
            )
        sha = verify_checksum(path)
        model = _dinov3.create_vit(name, **arch_overrides)
        _dinov3.load_into(model, read_state_dict(path), path, name)
        mean, std = _dinov3.normalisation(name, parsed.tag if parsed else None)
        teacher = DinoTeacher(
            model, name=name, teacher_id=f"{label}-{sha[:12]}", weights_sha256=sha, weights_path=path, mean=mean, std=std
        )
    if device is not None:
        teacher.to(device)
    return teacher


def _arch_label(name: str, overrides: dict[str, Any]) -> str:
    """``name`` plus sorted overrides, safe as a file or folder name."""
    parts = [name, *(f"{k}={v}" for k, v in sorted(overrides.items()))]
    return _UNSAFE_ID_CHARS.sub("_", "+".join(parts))
