"""What every benchmark result carries: the machine it ran on, written atomically as JSON."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from dinomix_core.io.atomic import atomic_write_text


def machine_info(device: torch.device | str | None = None) -> dict:
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def write_json(path: str | Path, doc: dict) -> Path:
    atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=False, default=str))
    return Path(path)
