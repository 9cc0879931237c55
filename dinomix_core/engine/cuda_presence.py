"""Whether a CUDA device is there for torch, answered without importing torch.

For the GUI process, which never imports torch (2.6 s of start-up and 500 MiB there, measured
with ``python -X importtime`` and ``ru_maxrss``): it only needs to know whether to offer CUDA.
The answer combines what ``torch.cuda.is_available()`` depends on: a torch build with CUDA
(read from torch's ``version.py`` without running it), ``CUDA_VISIBLE_DEVICES`` not hiding every
device, and the NVIDIA driver reporting a device (NVML, else the driver API's ``cuInit``). The
job's own ``resolve_device`` (with torch, in the worker) stays the judge: a CUDA job on a
machine where this guessed wrong fails there with its one-line message.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import re
import sys
from pathlib import Path

_NVML_LIBS = {"linux": ("libnvidia-ml.so.1",), "win32": ("nvml.dll",)}
_CUDA_LIBS = {"linux": ("libcuda.so.1",), "win32": ("nvcuda.dll",)}


@functools.lru_cache(maxsize=1)
def cuda_present() -> bool:
    """True when torch here would find a CUDA device (cached for the process)."""
    return torch_built_with_cuda() and not cuda_hidden() and driver_device_count() > 0


def torch_built_with_cuda() -> bool:
    """The installed torch's ``torch.version.cuda`` is set (CPU-only builds have None)."""
    spec = importlib.util.find_spec("torch")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return False
    version_file = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        text = version_file.read_text(encoding="utf-8")
    except OSError:
        return False
    match = re.search(r"^cuda\b[^=\n]*=\s*(.+)$", text, re.MULTILINE)
    return bool(match) and match.group(1).strip() not in ("None", "")


def cuda_hidden() -> bool:
    """``CUDA_VISIBLE_DEVICES`` set to nothing or to a negative index hides every device."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return False
    first = value.split(",")[0].strip()
    return first == "" or first.startswith("-")


def driver_device_count() -> int:
    """NVIDIA devices the driver reports (0 without a driver, on macOS, or on any failure)."""
    platform = "win32" if sys.platform == "win32" else "linux" if sys.platform.startswith("linux") else None
    if platform is None:
        return 0
    count = ctypes.c_uint(0)
    nvml = _load(_NVML_LIBS[platform])
    if nvml is not None:
        try:
            if nvml.nvmlInit_v2() == 0:
                try:
                    if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 0:
                        return int(count.value)
                finally:
                    nvml.nvmlShutdown()
        except AttributeError:
            pass
    cuda = _load(_CUDA_LIBS[platform])
    if cuda is not None:
        try:
            signed = ctypes.c_int(0)
            if cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(signed)) == 0:
                return max(0, int(signed.value))
        except AttributeError:
            pass
    return 0


def _load(names: tuple[str, ...]):
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None
