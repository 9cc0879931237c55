"""3D students: the V-Net / U-Net family the SSL baselines train (registered as unet3d, vnet).

Both names build :class:`UNet3d`; they differ only in defaults:

* ``vnet``: residual stages with V-Net's 1-2-3-3 convolutions per level, additive skips.
* ``unet3d``: plain stages of two convolutions, concatenated skips (3D U-Net).

Norm defaults to instance norm. DINO-Mix trains on batches of 2 labeled + 2 unlabeled
patches, and CutMix pastes labeled boxes into unlabeled context: batch statistics over so few,
so mixed samples are noisy, the EMA teacher would inherit running statistics that describe
neither domain, and sliding-window inference sees one patch at a time. Instance norm does
not depend on the batch, so training and evaluation compute the same function. ``"batch"``
stays available to reproduce the baselines (DHC's V-Net uses BatchNorm).
"""

from __future__ import annotations

from typing import Any

import torch

from dinomix_core.models._blocks import EncoderDecoder
from dinomix_core.models._registry import register_student


class UNet3d(EncoderDecoder):
    """3D encoder-decoder: (B, in_channels, D, H, W) -> logits (B, num_classes, D, H, W).

    Attributes used by the engine:
        num_classes, in_channels; ``config`` (name + every option, rebuilds this network);
        ``size_divisor`` (dz, dy, dx) that D, H, W must be multiples of (2**depth on each axis;
        instance norm in training also needs more than one bottleneck voxel, i.e. a patch
        larger than ``size_divisor`` on at least one axis);
        ``feature_channels`` and ``feature_stride`` (sz, sy, sx) of :meth:`forward_features`'s
        features: the second-to-last decoder stage, (B, 2*width, D/2, H/2, W/2).
    """

    def __init__(self, *, name: str, **options: Any) -> None:
        super().__init__(dims=3, **options)
        self.num_classes = int(options["num_classes"])
        self.in_channels = int(options["in_channels"])
        self.feature_channels = self.level1_channels
        self.feature_stride = (2, 2, 2)
        self.size_divisor = (2 ** self.depth,) * 3
        self.config = {"name": name, **options}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes, D, H, W) for a (B, in_channels, D, H, W) batch, axes (z, y, x)."""
        return self.forward_features(x)[0]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, features): features (B, feature_channels, D/2, H/2, W/2) for distillation."""
        check_input(x, self.in_channels, self.size_divisor)
        return self.body(x)


def check_input(x: torch.Tensor, in_channels: int, divisor: tuple[int, int, int]) -> None:
    """Fail early with the shape rule instead of a size mismatch deep in the decoder."""
    if x.dim() != 5 or x.shape[1] != in_channels:
        raise ValueError(f"student input must be (B, {in_channels}, D, H, W), got shape {tuple(x.shape)}")
    bad = [(axis, n, d) for axis, n, d in zip("DHW", x.shape[2:], divisor) if n % d]
    if bad:
        detail = ", ".join(f"{axis}={n} is not a multiple of {d}" for axis, n, d in bad)
        raise ValueError(f"student input spatial size {tuple(x.shape[2:])}: {detail}; pad or crop to size_divisor {divisor}")


@register_student("unet3d")
def unet3d(
    *,
    num_classes: int,
    in_channels: int = 1,
    width: int = 16,
    depth: int = 4,
    norm: str = "instance",
    dropout: float = 0.0,
    block: str = "plain",
    skip: str = "concat",
    convs_per_stage: int | None = 2,
) -> UNet3d:
    """3D U-Net: plain two-conv stages, concatenated skips."""
    return UNet3d(
        name="unet3d",
        num_classes=num_classes,
        in_channels=in_channels,
        width=width,
        depth=depth,
        norm=norm,
        dropout=dropout,
        block=block,
        skip=skip,
        convs_per_stage=convs_per_stage,
    )


@register_student("vnet")
def vnet(
    *,
    num_classes: int,
    in_channels: int = 1,
    width: int = 16,
    depth: int = 4,
    norm: str = "instance",
    dropout: float = 0.0,
    block: str = "residual",
    skip: str = "add",
    convs_per_stage: int | None = None,
) -> UNet3d:
    """V-Net: residual stages (1-2-3-3 convs per level when convs_per_stage is None), additive skips."""
    return UNet3d(
        name="vnet",
        num_classes=num_classes,
        in_channels=in_channels,
        width=width,
        depth=depth,
        norm=norm,
        dropout=dropout,
        block=block,
        skip=skip,
        convs_per_stage=convs_per_stage,
    )
