"""2D U-Net over axial slices, for users without a GPU, behind the 3D students' interface.

It takes and returns 5D tensors like the 3D students, so the trainer, the losses, FKD and the
sliding-window inferer need no special case: the D axis is folded into the batch, every
axial slice goes through 2D convolutions, and the result is unfolded to (B, C, D, H, W).
Slices never see their neighbours, which costs some accuracy and buys a large speed-up on
CPU. Norm defaults to instance norm for the same reason as the 3D students (see unet3d).
"""

from __future__ import annotations

from typing import Any

import torch

from dinomix_core.models._blocks import EncoderDecoder
from dinomix_core.models._registry import register_student
from dinomix_core.models.unet3d import check_input


class UNet2d(EncoderDecoder):
    """Slice-wise 2D encoder-decoder: (B, in_channels, D, H, W) -> logits (B, num_classes, D, H, W).

    Same attributes as :class:`~dinomix_core.models.unet3d.UNet3d`; ``size_divisor`` is
    (1, 2**depth, 2**depth) since z is never down-sampled, and the features of
    :meth:`forward_features` (second-to-last decoder stage) are (B, 2*width, D, H/2, W/2),
    ``feature_stride`` (1, 2, 2).
    """

    def __init__(self, *, name: str, **options: Any) -> None:
        super().__init__(dims=2, **options)
        self.num_classes = int(options["num_classes"])
        self.in_channels = int(options["in_channels"])
        self.feature_channels = self.level1_channels
        self.feature_stride = (1, 2, 2)
        self.size_divisor = (1, 2 ** self.depth, 2 ** self.depth)
        self.config = {"name": name, **options}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes, D, H, W) for a (B, in_channels, D, H, W) batch, axes (z, y, x)."""
        return self.forward_features(x)[0]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, features): features (B, feature_channels, D, H/2, W/2) for distillation."""
        check_input(x, self.in_channels, self.size_divisor)
        b, c, d, h, w = x.shape
        slices = x.permute(0, 2, 1, 3, 4).reshape(b * d, c, h, w)
        logits, features = self.body(slices)
        return _unfold(logits, b, d), _unfold(features, b, d)


def _unfold(t: torch.Tensor, b: int, d: int) -> torch.Tensor:
    """(B*D, C, H, W) -> (B, C, D, H, W)."""
    return t.reshape(b, d, *t.shape[1:]).permute(0, 2, 1, 3, 4).contiguous()


@register_student("unet2d")
def unet2d(
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
) -> UNet2d:
    """2D U-Net on axial slices: plain two-conv stages, concatenated skips."""
    return UNet2d(
        name="unet2d",
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
