"""Encoder-decoder building blocks shared by the 3D and 2D students (one code path, two dims).

The layout follows the V-Net of the SSL baselines (DHC, UA-MT): conv stages, a strided
2x2(x2) convolution to go down, a transposed convolution to come up, and a skip from each
encoder level to the decoder level of the same resolution. Level ``k`` works at stride
``2**k`` with ``width * 2**k`` channels; level ``depth`` is the bottleneck.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dinomix_core.io.errors import DinomixInputError

NORMS = ("instance", "batch")
BLOCKS = ("residual", "plain")
SKIPS = ("add", "concat")

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_NORM = {
    ("instance", 2): nn.InstanceNorm2d,
    ("instance", 3): nn.InstanceNorm3d,
    ("batch", 2): nn.BatchNorm2d,
    ("batch", 3): nn.BatchNorm3d,
}
_DROPOUT = {2: nn.Dropout2d, 3: nn.Dropout3d}


def vnet_convs(level: int) -> int:
    """Convolutions per stage in V-Net: 1 at full resolution, 2 at stride 2, 3 below."""
    return min(level + 1, 3)


def _norm(kind: str, dims: int, channels: int) -> nn.Module:
    if kind == "instance":
        # affine so the layer can rescale like BatchNorm; no running stats, so train == eval.
        return _NORM[(kind, dims)](channels, affine=True, track_running_stats=False)
    return _NORM[(kind, dims)](channels)


class ConvNormAct(nn.Sequential):
    """3x3(x3) convolution (bias-free: the norm re-centres), norm, optional ReLU."""

    def __init__(self, dims: int, cin: int, cout: int, norm: str, act: bool = True) -> None:
        layers: list[nn.Module] = [_CONV[dims](cin, cout, kernel_size=3, padding=1, bias=False), _norm(norm, dims, cout)]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Stage(nn.Module):
    """``n`` ConvNormAct layers; with ``residual`` the input is added back before the last ReLU.

    The shortcut is the identity when channels match, otherwise a 1x1(x1) conv + norm.
    """

    def __init__(self, dims: int, cin: int, cout: int, n: int, norm: str, residual: bool) -> None:
        super().__init__()
        layers = [ConvNormAct(dims, cin if i == 0 else cout, cout, norm, act=not (residual and i == n - 1)) for i in range(n)]
        self.convs = nn.Sequential(*layers)
        self.residual = residual
        if residual and cin != cout:
            self.shortcut: nn.Module = nn.Sequential(_CONV[dims](cin, cout, kernel_size=1, bias=False), _norm(norm, dims, cout))
        else:
            self.shortcut = nn.Identity()
        self.act = nn.ReLU(inplace=True) if residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convs(x)
        if self.residual:
            out = self.act(out + self.shortcut(x))
        return out


class Down(nn.Sequential):
    """Halve every spatial axis with a stride-2 kernel-2 convolution (V-Net's learnt pooling)."""

    def __init__(self, dims: int, cin: int, cout: int, norm: str) -> None:
        super().__init__(
            _CONV[dims](cin, cout, kernel_size=2, stride=2, bias=False), _norm(norm, dims, cout), nn.ReLU(inplace=True)
        )


class Up(nn.Sequential):
    """Double every spatial axis with a stride-2 kernel-2 transposed convolution."""

    def __init__(self, dims: int, cin: int, cout: int, norm: str) -> None:
        super().__init__(
            _CONV_T[dims](cin, cout, kernel_size=2, stride=2, bias=False), _norm(norm, dims, cout), nn.ReLU(inplace=True)
        )


def check_options(
    *,
    in_channels: Any,
    num_classes: Any,
    width: Any,
    depth: Any,
    norm: Any,
    dropout: Any,
    block: Any,
    skip: Any,
    convs_per_stage: Any,
) -> None:
    """Reject impossible student options with one clear message each (they come from users)."""
    for key, value, low in (("in_channels", in_channels, 1), ("num_classes", num_classes, 2), ("width", width, 1), ("depth", depth, 1)):
        if not _is_int_at_least(value, low):
            _bad(key, value, f"is not an integer >= {low}", f"set {key} to an integer >= {low}")
    for key, value, allowed in (("norm", norm, NORMS), ("block", block, BLOCKS), ("skip", skip, SKIPS)):
        if value not in allowed:
            _bad(key, value, "is not supported", f"use one of {', '.join(allowed)}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= float(dropout) < 1.0:
        _bad("dropout", dropout, "is not a probability in [0, 1)", "set dropout between 0 and 1, e.g. 0.5")
    if convs_per_stage is not None and not _is_int_at_least(convs_per_stage, 1):
        _bad("convs_per_stage", convs_per_stage, "is not an integer >= 1", "give an integer >= 1, or null for V-Net's 1-2-3-3 schedule")


def _is_int_at_least(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _bad(key: str, value: Any, problem: str, fix: str) -> None:
    raise DinomixInputError(None, f"student option {key}={value!r} {problem}.", f"{fix}.")


class EncoderDecoder(nn.Module):
    """U-Net / V-Net body over ``dims`` spatial axes: (N, in_channels, *S) -> logits, features.

    ``features`` is the decoder output at level 1 (stride 2, ``width * 2`` channels), the
    second-to-last decoder stage: coarse enough to carry semantics for distillation, fine
    enough that small organs still cover several cells. With ``depth == 1`` level 1 is the
    bottleneck itself.
    """

    def __init__(
        self,
        *,
        dims: int,
        in_channels: int,
        num_classes: int,
        width: int,
        depth: int,
        norm: str,
        dropout: float,
        block: str,
        skip: str,
        convs_per_stage: int | None,
    ) -> None:
        super().__init__()
        check_options(
            in_channels=in_channels,
            num_classes=num_classes,
            width=width,
            depth=depth,
            norm=norm,
            dropout=dropout,
            block=block,
            skip=skip,
            convs_per_stage=convs_per_stage,
        )
        self.dims = dims
        self.depth = depth
        self.skip = skip
        residual = block == "residual"
        ch = [width * 2**k for k in range(depth + 1)]

        def n_convs(level: int) -> int:
            return vnet_convs(level) if convs_per_stage is None else convs_per_stage

        self.enc = nn.ModuleList([Stage(dims, in_channels, ch[0], n_convs(0), norm, residual)])
        self.down = nn.ModuleList()
        for k in range(1, depth + 1):
            self.down.append(Down(dims, ch[k - 1], ch[k], norm))
            self.enc.append(Stage(dims, ch[k], ch[k], n_convs(k), norm, residual))
        self.bottleneck_dropout = _DROPOUT[dims](float(dropout))
        # Decoder modules are stored deepest first: up[i] / dec[i] produce level depth-1-i.
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for k in range(depth - 1, -1, -1):
            self.up.append(Up(dims, ch[k + 1], ch[k], norm))
            cin = 2 * ch[k] if skip == "concat" else ch[k]
            self.dec.append(Stage(dims, cin, ch[k], n_convs(k), norm, residual))
        self.head_dropout = _DROPOUT[dims](float(dropout))
        self.head = _CONV[dims](ch[0], num_classes, kernel_size=1)
        self.level1_channels = ch[1]
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def body(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, in_channels, *S) -> (logits (N, K, *S), level-1 features (N, 2*width, *S/2))."""
        skips = []
        h = x
        for k in range(self.depth + 1):
            if k > 0:
                h = self.down[k - 1](h)
            h = self.enc[k](h)
            skips.append(h)
        h = self.bottleneck_dropout(h)
        features = h if self.depth == 1 else None
        for i, k in enumerate(range(self.depth - 1, -1, -1)):
            h = self.up[i](h)
            h = h + skips[k] if self.skip == "add" else torch.cat([h, skips[k]], dim=1)
            h = self.dec[i](h)
            if k == 1:
                features = h
        assert features is not None
        return self.head(self.head_dropout(h)), features
