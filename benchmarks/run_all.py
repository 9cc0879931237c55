"""Run the recorded benchmarks one after another: `make bench` (quick set) or `make bench BENCH=all`.

Usage:  .venv/bin/python -m benchmarks.run_all [--list] [--dry-run] [NAME ...]

Each benchmark is the exact command that benchmarks/README.md records, so a figure in the
README can be reproduced by name (``python -m benchmarks.run_all inference``). Every command
runs in its own interpreter: one benchmark's imports, threads and peak memory cannot colour
the next one's figures. Results land in ``benchmarks/results/`` as each benchmark writes
them; this runner only orders them and reports which ones failed (exit 1 if any did).

The "quick" set takes a few minutes on 2 CPU cores; "all" adds the long ones (the SSL table
is hours on a CPU: see benchmarks/README.md section 1 for its GPU variant, benchmarks/gpu.sh).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Benchmark:
    name: str
    argv: tuple[str, ...]
    quick: bool  # part of the default `make bench`
    needs_display: bool = False  # run under xvfb-run (napari draws only with an X server)
    what: str = ""


def _py(*args: str) -> tuple[str, ...]:
    return (sys.executable, *args)


def _dinomix(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "dinomix_core.cli", *args)


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("step-cost", _dinomix("bench", "step-cost", "--patch", "32,64,64", "--width", "8", "--depth", "3",
                                    "--steps", "5", "--warmup", "2", "--out", "bench_step_cost",
                                    "--json", "benchmarks/results/step_cost.json"),
              quick=True, what="DINO-Mix step over a mean-teacher step (README section 2)"),
    Benchmark("inference-quick", _py("-m", "benchmarks.inference", "--quick"),
              quick=True, what="sliding window vs MONAI on a small volume (smoke figure)"),
    Benchmark("io-peak-rss", _py("benchmarks/io_peak_rss.py", "--repeat", "1"),
              quick=True, what="peak memory of reading a 512x512x300 CT"),
    Benchmark("inference", _py("-m", "benchmarks.inference", "--width", "16", "--depth", "4", "--fov-mm", "384"),
              quick=False, what="default student on a 200x512x512 CT vs MONAI (README section 3)"),
    Benchmark("predict-memory", _py("-m", "benchmarks.predict_memory", "--width", "2", "--depth", "2"),
              quick=False, what="peak RSS of predicting a 512x512x300 CT with uncertainty, before/after (section 7)"),
    Benchmark("gui", _py("-m", "benchmarks.gui_responsiveness", "--json", "benchmarks/results/gui.json"),
              quick=False, needs_display=True, what="GUI stalls while training, first overlay, app memory"),
    Benchmark("app-start", _py("-m", "benchmarks.app_start", "--json", "benchmarks/results/app_start.json"),
              quick=True, needs_display=True, what="desktop app: launch to window on screen, its memory then"),
    Benchmark("ssl", _dinomix("bench", "ssl", "--jobs", "2", "--resume", "--out", "bench_ssl",
                              "--json", "benchmarks/results/ssl_phantom.json"),
              quick=False, what="5 methods x 3 seeds on the phantom (hours on a CPU)"),
)


def _command(bench: Benchmark) -> list[str]:
    argv = list(bench.argv)
    if bench.needs_display and not os.environ.get("DISPLAY"):
        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            raise SystemExit(f"benchmark {bench.name!r} needs an X server: install xvfb (make sysdeps) or set DISPLAY")
        argv = [xvfb, "-a", "-s", "-screen 0 1920x1080x24", *argv]
    return argv


def _select(names: list[str]) -> list[Benchmark]:
    if not names:
        return [b for b in BENCHMARKS if b.quick]
    if names == ["all"]:
        return list(BENCHMARKS)
    known = {b.name: b for b in BENCHMARKS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; choose from: all, {', '.join(known)}")
    return [known[n] for n in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: the quick set; 'all': every one)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    args = parser.parse_args(argv)
    if args.list:
        for b in BENCHMARKS:
            print(f"{b.name:16s} {'quick' if b.quick else 'long ':5s}  {b.what}")
        return 0
    chosen = _select(args.names)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    failed: list[str] = []
    for bench in chosen:
        command = _command(bench)
        print(f"== {bench.name}: {shlex.join(command)}", flush=True)
        if args.dry_run:
            continue
        start = time.perf_counter()
        code = subprocess.call(command, cwd=ROOT, env=env)
        took = time.perf_counter() - start
        print(f"== {bench.name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {took:.0f} s", flush=True)
        if code != 0:
            failed.append(bench.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
