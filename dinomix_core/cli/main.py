"""`dinomix` command line: one sub-module of this package per command, found at start-up.

Each module ``dinomix_core/cli/<name>.py`` that defines ``register(subparsers)`` adds its
command; ``register`` must set ``func`` (a callable taking the parsed args, returning an exit
code) as a default on its parser. Bad user input (:class:`DinomixInputError`) prints one clear
line and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import pkgutil
import sys

from dinomix_core.io.errors import DinomixInputError

# Order shown in --help; any other command module is listed after these.
_ORDER = ["demo", "phantom", "train", "predict", "evaluate", "project", "weights", "bench"]


def _command_modules() -> list[str]:
    import dinomix_core.cli as package

    names = [m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_") and m.name != "main"]
    return sorted(names, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dinomix",
        description="DINO-Mix Studio engine: semi-supervised CT organ segmentation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _command_modules():
        module = importlib.import_module(f"dinomix_core.cli.{name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DinomixInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        message = _os_error_line(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _os_error_line(exc: OSError) -> str | None:
    """One line for an OSError that names its file (or is a full disk); None to re-raise a bug."""
    from dinomix_core.io.atomic import is_disk_full

    where = exc.filename if exc.filename is not None else None
    if is_disk_full(exc):
        return (f"disk full at {where or 'the output folder'} ({exc.strerror}). "
                "Fix: Free disk space (or choose a folder on another disk) and run the command again.")
    if where is None:
        return None
    fixes = {
        errno.EACCES: "Check the permissions of the file and its folder, or choose another path.",
        errno.EPERM: "Check the permissions of the file and its folder, or choose another path.",
        errno.EROFS: "The file system is read-only: choose a path on a writable disk.",
        errno.ENOTDIR: "A file stands where a folder is expected: choose another path or move that file.",
        errno.EISDIR: "A folder stands where a file is expected: name a file inside it instead.",
        errno.EEXIST: "Something already exists there: choose another path.",
        errno.ENOENT: "Check the path (its folder must exist).",
    }
    fix = fixes.get(exc.errno, "Check the path and try again.")
    return f"{where}: {exc.strerror or exc}. Fix: {fix}"


if __name__ == "__main__":
    sys.exit(main())
