"""Whether CUDA is there, asked without torch (the GUI process): the same answer as torch's."""

from __future__ import annotations

import ctypes
import importlib.util
from types import SimpleNamespace

import pytest

from dinomix_core.engine import cuda_presence
from dinomix_core.engine.cuda_presence import cuda_hidden, cuda_present, driver_device_count, torch_built_with_cuda


def test_the_answer_is_torch_s_on_this_machine():
    import torch

    cuda_present.cache_clear()
    assert cuda_present() == torch.cuda.is_available()


@pytest.mark.parametrize("line, built", [("cuda: Optional[str] = '12.4'", True), ("cuda: Optional[str] = None", False),
                                         ("cuda = '13.0'", True)])
def test_the_torch_build_is_read_from_its_version_file(tmp_path, monkeypatch, line, built):
    package = tmp_path / "torch"
    package.mkdir()
    (package / "version.py").write_text(f"__version__ = '2.9.0'\ndebug = False\n{line}\nhip = None\n")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: SimpleNamespace(submodule_search_locations=[str(package)]))
    assert torch_built_with_cuda() is built


@pytest.mark.parametrize("value, hidden", [(None, False), ("", True), ("-1", True), ("0", False), ("1,0", False),
                                           ("GPU-5f3e", False)])
def test_cuda_visible_devices_can_hide_every_device(monkeypatch, value, hidden):
    if value is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert cuda_hidden() is hidden


class _FakeNvml:
    def __init__(self, count: int):
        self.count, self.shut = count, False

    def nvmlInit_v2(self):  # noqa: N802 (the library's names)
        return 0

    def nvmlDeviceGetCount_v2(self, ref):  # noqa: N802
        ref._obj.value = self.count
        return 0

    def nvmlShutdown(self):  # noqa: N802
        self.shut = True
        return 0


def test_the_driver_s_device_count_and_no_driver(monkeypatch):
    monkeypatch.setattr(cuda_presence.sys, "platform", "linux")
    nvml = _FakeNvml(2)

    def load(name):
        if name == "libnvidia-ml.so.1":
            return nvml
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", load)
    assert driver_device_count() == 2 and nvml.shut

    def nothing(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", nothing)
    assert driver_device_count() == 0
    monkeypatch.setattr(cuda_presence.sys, "platform", "darwin")
    assert driver_device_count() == 0
