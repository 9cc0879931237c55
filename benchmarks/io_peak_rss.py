"""Peak resident memory of reading a 512x512x300 int16 CT (.nii.gz) with read_volume.

Usage:  .venv/bin/python benchmarks/io_peak_rss.py [--slices 300] [--repeat 3]

Writes a synthetic CT-like volume (air, a soft-tissue body ellipse with noise, a bone ring)
into a temporary folder, then runs each case in a fresh interpreter under ``/usr/bin/time -v``
and prints its maximum resident set size. "python + imports" is the same interpreter that
only imports numpy, SimpleITK and dinomix_core.io, so "extra" is what the read itself costs.
Needs GNU time (Debian/Ubuntu: ``apt-get install time``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# (file, code): INT16 is the int16 .nii.gz, INT32 the same voxels stored as int32 (as
# TotalSegmentator and many converters write CT), MHA a compressed int16 .mha, the
# non-NIfTI path; read_volume returns int16 for all.
CASES = {
    "python + imports": ("INT16", "import numpy, SimpleITK, dinomix_core.io"),
    "read_volume, int16 file": ("INT16", "from dinomix_core.io import read_volume; v = read_volume(PATH); assert v.array.dtype.name == 'int16'"),
    "sitk.ReadImage + GetArrayFromImage, int16 file (reference)": ("INT16", "import SimpleITK as s; a = s.GetArrayFromImage(s.ReadImage(PATH))"),
    "read_volume, int32 file": ("INT32", "from dinomix_core.io import read_volume; v = read_volume(PATH); assert v.array.dtype.name == 'int16'"),
    "read_volume, int16 .mha (SimpleITK decode + one copy)": ("MHA", "from dinomix_core.io import read_volume; v = read_volume(PATH)"),
}


def make_ct(folder: Path, slices: int) -> int:
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    y, x = np.mgrid[:512, :512]
    body = ((x - 256) / 220.0) ** 2 + ((y - 256) / 160.0) ** 2 <= 1.0
    ring = body & (((x - 256) / 200.0) ** 2 + ((y - 256) / 140.0) ** 2 > 0.9)
    array = np.full((slices, 512, 512), -1000, dtype=np.int16)
    for z in range(slices):
        noise = rng.normal(0.0, 15.0, size=(512, 512)).astype(np.int16)
        array[z][body] = 40 + noise[body]
        array[z][ring] = 700 + noise[ring]
    for name, dtype, suffix in (("INT16", np.int16, ".nii.gz"), ("INT32", np.int32, ".nii.gz"), ("MHA", np.int16, ".mha")):
        image = sitk.GetImageFromArray(array.astype(dtype, copy=False))
        image.SetSpacing((0.75, 0.75, 1.5))
        sitk.WriteImage(image, str(folder / f"{name}{suffix}"), True)
        del image
    return array.nbytes


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def peak_rss_mib(code: str, path: Path) -> tuple[float, float]:
    cmd = ["/usr/bin/time", "-v", sys.executable, "-c", code.replace("PATH", repr(str(path)))]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    wall = time.perf_counter() - start
    kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return kib / 1024.0, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the table shows the median")
    args = parser.parse_args()
    if not Path("/usr/bin/time").exists():
        sys.exit("GNU time is missing: apt-get install time")
    with tempfile.TemporaryDirectory() as tmp:
        nbytes = make_ct(Path(tmp), args.slices)
        volume_mib = nbytes / 2**20
        size = (Path(tmp) / "INT16.nii.gz").stat().st_size / 2**20
        print(f"volume 512x512x{args.slices} int16 = {volume_mib:.0f} MiB; int16 file {size:.0f} MiB .nii.gz")
        print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
        rows = {}
        for name, (which, code) in CASES.items():
            file = next(Path(tmp).glob(f"{which}.*"))
            runs = sorted(peak_rss_mib(code, file) for _ in range(args.repeat))
            rows[name] = runs[len(runs) // 2]
    base = rows["python + imports"][0]
    print(f"\n| case (median of {args.repeat}) | peak RSS (MiB) | extra over imports (MiB) | extra / volume | wall (s) |")
    print("|---|---:|---:|---:|---:|")
    for name, (rss, wall) in rows.items():
        extra = rss - base
        print(f"| {name} | {rss:.0f} | {extra:.0f} | {extra / volume_mib:.2f}x | {wall:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
