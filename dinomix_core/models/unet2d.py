"""2D U-Net over axial slices, for users without a GPU, behind the 3D students' interface.

It takes and returns 5D tensors like the 3D students, so the trainer, the losses, FKD and the
sliding-window inferer need no special case: the D axis is folded into the batch, every
axial slice goes through 2D convolutions, and the result is unfolded to (B, C, D, H, W).
Plain ``unet2d`` slices never see their neighbours, which costs some accuracy and buys a large
speed-up on CPU. ``unet2.5d`` gives each slice its ``context`` neighbours above and below as
extra input channels (edge slices of a patch or window repeat the outermost slice): the z
context that tells the oesophagus from a bowel loop or an adrenal limb from a vessel, at the
cost of a wider first convolution only. Norm defaults to instance norm for the same reason as
the 3D students (see unet3d).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

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

    def __init__(self, *, name: str, context: int = 0, **options: Any) -> None:
        if int(context) < 0:
            raise ValueError(f"context must be 0 or more slices, got {context}")
        self.context = int(context)
        body_options = dict(options, in_channels=int(options["in_channels"]) * (2 * self.context + 1))
        super().__init__(dims=2, **body_options)
        self.num_classes = int(options["num_classes"])
        self.in_channels = int(options["in_channels"])
        self.feature_channels = self.level1_channels
        self.feature_stride = (1, 2, 2)
        self.size_divisor = (1, 2 ** self.depth, 2 ** self.depth)
        self.config = {"name": name, **options, **({"context": self.context} if self.context else {})}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes, D, H, W) for a (B, in_channels, D, H, W) batch, axes (z, y, x)."""
        return self.forward_features(x)[0]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, features): features (B, feature_channels, D, H/2, W/2) for distillation."""
        check_input(x, self.in_channels, self.size_divisor)
        if self.context:
            x = _with_neighbours(x, self.context)
        b, c, d, h, w = x.shape
        slices = x.permute(0, 2, 1, 3, 4).reshape(b * d, c, h, w)
        logits, features = self.body(slices)
        return _unfold(logits, b, d), _unfold(features, b, d)


def _with_neighbours(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, C, D, H, W) -> (B, C * (2k+1), D, H, W): slice z gets slices z-k .. z+k as channels."""
    d = x.shape[2]
    padded = F.pad(x, (0, 0, 0, 0, k, k), mode="replicate")
    return torch.cat([padded[:, :, i:i + d] for i in range(2 * k + 1)], dim=1)


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
    return UNet2d(name="unet2d", **locals())


@register_student("unet2.5d")
def unet25d(
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
    context: int = 1,
) -> UNet2d:
    """2D U-Net on axial slices that also sees ``context`` slices above and below each one."""
    return UNet2d(name="unet2.5d", **locals())
