"""Settings kept between runs of the app: device, teacher-weights folder, worker threads, recent projects.

Stored as JSON in the per-user config folder (platformdirs; ``$DINOMIX_CONFIG_DIR`` overrides
it, which the tests use), written atomically so a crash mid-save never leaves a broken file;
an unreadable file falls back to the defaults and is kept aside, never silently lost.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from dinomix_core.io.atomic import atomic_write_text

MAX_RECENT = 8


def config_dir() -> Path:
    env = os.environ.get("DINOMIX_CONFIG_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir("dinomix"))


@dataclass
class AppSettings:
    device: str = "auto"  # auto, cpu, cuda
    weights_dir: str = ""  # extra folder searched for DINOv3 weights ($DINOMIX_WEIGHTS_DIR while the app runs)
    worker_threads: int = 0  # 0: all cores (the worker runs niced)
    recent_projects: list[str] = field(default_factory=list)

    @classmethod
    def load(cls) -> "AppSettings":
        path = config_dir() / "settings.json"
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (OSError, ValueError, TypeError):
            try:
                path.replace(path.with_suffix(".json.unreadable"))
            except OSError:
                pass
            return cls()

    def save(self) -> Path:
        path = config_dir() / "settings.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(asdict(self), indent=1))
        return path

    def add_recent(self, project: str | Path) -> None:
        text = str(Path(project).resolve())
        self.recent_projects = [text, *[p for p in self.recent_projects if p != text]][:MAX_RECENT]

    def thread_count(self) -> int | None:
        return None if self.worker_threads <= 0 else int(self.worker_threads)

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
