"""Where and in what precision the network runs for inference: device, autocast, compiling.

Split from ``inferer.py`` (the window grid and accumulation stay there) so that each file
has one job; ``inferer`` re-exports ``PRECISIONS`` and ``cpu_has_native_bf16``.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from typing import Callable

import numpy as np
import torch
from torch import nn


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def _autocast(device: torch.device, amp: bool, precision: str = "auto"):
    """The autocast context for ``precision`` on ``device`` (a no-op for float32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not amp or precision == "float32":
        return nullcontext()
    if device.type == "cuda":
        if precision == "auto":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = getattr(torch, precision)
        return torch.autocast("cuda", dtype=dtype)
    if device.type != "cpu":
        return nullcontext()
    if precision == "float16":
        raise ValueError("precision='float16' needs CUDA; on the CPU use 'bfloat16' or 'float32'")
    if precision == "auto" and not cpu_has_native_bf16():
        return nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions in hardware (AVX512-BF16 or AMX), per oneDNN.

    On AVX2-only CPUs oneDNN converts bf16 to float32 around every kernel: slower, not faster.
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _accumulator_device(device, requested, classes: int, shape, dtype: torch.dtype) -> torch.device:
    if requested is not None:
        return torch.device(requested)
    if device.type != "cuda":
        return device
    voxels = int(np.prod(shape))
    needed = voxels * (classes * torch.empty((), dtype=dtype).element_size() + 4)
    free, _ = torch.cuda.mem_get_info(device)
    return device if needed < free // 2 else torch.device("cpu")


def _fits_on_gpu(image: torch.Tensor, device: torch.device) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return image.numel() * image.element_size() < free // 8


def _label_dtype(classes: int):
    return np.uint8 if classes <= 256 else np.uint16


class _CompiledNet:
    """``torch.compile(net)`` that falls back to ``net`` itself, for good, if compiling fails.

    Compilation is lazy (it happens at the first call), so the fallback is at call time: any
    error from the compiled path (no C++ compiler, Triton blocked, an op dynamo cannot trace)
    warns once and runs eagerly from then on. An error the eager network raises too (a bad
    input shape) surfaces from the eager call, and compilation stays on.
    """

    def __init__(self, net: nn.Module):
        self.net = net
        self.compiled: Callable | None = None
        self.failed: str | None = None
        try:
            self.compiled = torch.compile(net, dynamic=False)
        except Exception as exc:  # noqa: BLE001 - torch.compile raises many kinds (e.g. unsupported Python)
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self.compiled = None
        self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        warnings.warn(f"torch.compile is unavailable here ({self.failed}); running the network eagerly",
                      RuntimeWarning, stacklevel=3)

    def __call__(self, x: torch.Tensor):
        if self.compiled is not None:
            try:
                return self.compiled(x)
            except Exception as exc:  # noqa: BLE001 - see the class docstring
                out = self.net(x)  # the network's own error (a bad shape) surfaces from here
                self._fail(exc)
                return out
        return self.net(x)


def _compiled(net: nn.Module) -> _CompiledNet:
    """The compiled runner of ``net``, built at its first use and kept on the network.

    Kept in the module's ``__dict__`` (not as a sub-module: ``state_dict`` is unchanged), so
    later predictions in the same process reuse the compiled code and the runner goes away
    with the network.
    """
    runner = net.__dict__.get("_dinomix_compiled")
    if runner is None:
        runner = _CompiledNet(net)
        object.__setattr__(net, "_dinomix_compiled", runner)
    return runner
