"""Settings kept between runs of the app: device, teacher-weights folder, worker threads, recent
projects, the case last open in each project, and the window's size, position and dock layout.

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
    last_case: dict[str, str] = field(default_factory=dict)  # resolved project path -> case id
    window_geometry: str = ""  # QMainWindow.saveGeometry(), base64
    window_state: str = ""  # QMainWindow.saveState(): the docks' places and sizes, base64

    @classmethod
    def load(cls) -> "AppSettings":
        path = config_dir() / "settings.json"
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            defaults = cls()
            kept = {}
            for f in fields(cls):  # a value of the wrong type (a hand-edited file) falls back to its default
                if f.name in data and isinstance(data[f.name], type(getattr(defaults, f.name))):
                    kept[f.name] = data[f.name]
            settings = cls(**kept)
            settings.recent_projects = [p for p in settings.recent_projects if isinstance(p, str)]
            settings.last_case = {k: v for k, v in settings.last_case.items() if isinstance(v, str)}
            return settings
        except (OSError, ValueError, TypeError, AttributeError):
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

    def remember_case(self, project: str | Path, case_id: str | None) -> None:
        """The case to show when ``project`` is opened again (None: forget it)."""
        key = str(Path(project).resolve())
        if case_id is None:
            self.last_case.pop(key, None)
        else:
            self.last_case[key] = case_id
        for stale in [k for k in self.last_case if k not in self.recent_projects and k != key]:
            del self.last_case[stale]  # only projects still in the recent list are remembered

    def case_to_reopen(self, project: str | Path) -> str | None:
        return self.last_case.get(str(Path(project).resolve()))

    def project_to_reopen(self) -> Path | None:
        """The most recent project that is still a project folder (``dinomix-app`` with no argument)."""
        for text in self.recent_projects:
            if (Path(text) / "project.sqlite").is_file():
                return Path(text)
        return None

    def thread_count(self) -> int | None:
        return None if self.worker_threads <= 0 else int(self.worker_threads)

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        from dinomix_core.engine.cuda_presence import cuda_present  # not torch: the GUI process never imports it

        return "cuda" if cuda_present() else "cpu"
