"""``dinomix-app [PROJECT] [--sample | --empty] [--screenshot OUT.png] [--install-desktop-entry]``: start the desktop app.

With no PROJECT the most recent project reopens, on the case that was open when it was left.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dinomix-app", description="DINO-Mix Studio: annotation assist for CT organ "
                                     "segmentation (napari viewer, background training, autosaved labels).")
    parser.add_argument("project", nargs="?", help="a project folder to open (default: the most recent project, "
                        "on the case you left it on)")
    parser.add_argument("--sample", action="store_true", help="create (once) and open the sample project (phantom CT, "
                        "generated locally)")
    parser.add_argument("--screenshot", metavar="OUT.png", help="open, render, save a screenshot of the whole window "
                        "and exit")
    parser.add_argument("--empty", action="store_true", help="start without opening a project")
    parser.add_argument("--install-desktop-entry", action="store_true", help="add DINO-Mix Studio, with its icon, to "
                        "this Linux desktop's application menu (your own ~/.local/share only) and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.project and args.sample:
        print("dinomix-app: give a PROJECT or --sample, not both.", file=sys.stderr)
        return 2
    if args.install_desktop_entry:
        from dinomix_app.desktop_entry import install_desktop_entry

        try:
            entry, icon = install_desktop_entry()
        except OSError as exc:
            print(f"dinomix-app: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {entry}\nwrote {icon}")
        return 0
    if args.empty and (args.project or args.sample):
        print("dinomix-app: --empty starts without a project: give it alone, not with a PROJECT or --sample.",
              file=sys.stderr)
        return 2
    project = args.project
    if project is None and not args.sample and not args.empty:
        from dinomix_app.settings import AppSettings

        project = AppSettings.load().project_to_reopen()  # None: start without a project
    if project is not None and not (Path(project) / "project.sqlite").is_file():
        print(f"dinomix-app: {project}: not a DINO-Mix project (no project.sqlite). Fix: create one with "
              f"`dinomix project init {project}` or pick the project folder.", file=sys.stderr)
        return 2
    if args.screenshot and not str(args.screenshot).lower().endswith(".png"):
        print(f"dinomix-app: {args.screenshot}: the screenshot must be a .png file.", file=sys.stderr)
        return 2

    missing = missing_gui_packages()
    if missing:
        print(f"dinomix-app: the GUI packages are not installed ({', '.join(missing)}). Fix: "
              "pip install 'dinomix-studio[gui]' (the engine and the `dinomix` CLI work without them).",
              file=sys.stderr)
        return 2
    from napari.qt import get_qapp

    # napari's own application set-up: its theme resources (icons), tooltips, thread workers.
    app = get_qapp()  # (its keywords are all-or-nothing: name set below)
    app.setApplicationName("DINO-Mix Studio")
    from dinomix_app.icon import ICON_NAME, app_icon

    app.setWindowIcon(app_icon())  # napari's get_qapp set napari's own
    app.setDesktopFileName(ICON_NAME)  # Wayland: the launcher's entry, and its icon, for our windows
    from dinomix_app.heap import freeze_startup_heap
    from dinomix_app.main_window import MainWindow, render_and_wait

    if args.sample:
        from dinomix_core.project.sample import create_sample_project

        project = create_sample_project()
    window = MainWindow(project)
    freeze_startup_heap()  # after the imports and the window: see heap.py
    if args.screenshot:
        return save_screenshot(window, Path(args.screenshot), render_and_wait)
    window.show()
    window.start_worker_standby()
    code = app.exec()
    return leave(code)


GUI_PACKAGES = ("napari", "magicgui", "PySide6", "pyqtgraph")


def missing_gui_packages() -> list[str]:
    """The `[gui]` extra's packages this environment lacks (a headless install has none of them)."""
    from importlib.util import find_spec

    def absent(name: str) -> bool:
        try:
            return find_spec(name) is None
        except (ImportError, ValueError):  # a broken or blocked install counts as missing
            return True

    return [name for name in GUI_PACKAGES if absent(name)]


def leave(code: int) -> int:
    """End the process once the window has closed (edits flushed, workers stopped).

    The interpreter's final garbage collection of a long Qt session can abort in a C
    extension ("none_dealloc", seen at the end of the GUI test suite); nothing is left to
    save by then, so the exit handlers run and the process ends without that collection.
    """
    import atexit
    import os

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def save_screenshot(window, out: Path, render_and_wait) -> int:
    """Render the window, grab it (canvas included) and write a PNG atomically."""
    from dinomix_core.io.atomic import atomic_path

    render_and_wait(window, 1500)
    pixmap = window.grab()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        if not pixmap.save(str(tmp), "PNG"):
            print(f"dinomix-app: {out}: the screenshot could not be written. Fix: check the folder is writable.",
                  file=sys.stderr)
            return 2
    window.panel.shutdown()
    window.close()
    print(f"wrote {out}")
    return 0
