"""Reading a 512 x 512 x 300 int16 CT from .nii.gz: ISA-L decompression against the standard library's.

    python -m benchmarks.nifti_read_speed [--json benchmarks/results/nifti_read_speed.json]

Writes a CT-like volume (body ellipse, noise) once to a temporary folder, then times
``read_volume`` (the engine's streaming NIfTI reader: decompression, length, CRC and
finiteness checks) three times with ``isal.igzip`` (what the reader uses) and three times
with the standard library's ``gzip`` module put in its place. Median wall time in seconds.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _ct(path: Path) -> Path:
    from dinomix_core.io import Volume, write_image

    shape = (300, 512, 512)
    rng = np.random.default_rng(0)
    _, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    body = ((yy - 256) / 200.0) ** 2 + ((xx - 256) / 230.0) ** 2 < 1.0
    ct = np.where(body, 40, -1000).astype(np.int16) + rng.integers(-20, 20, shape, dtype=np.int16)
    return write_image(Volume(ct, spacing_zyx=(1.0, 0.8, 0.8), modality="CT"), path)


def measure(repeat: int = 3) -> dict:
    from dinomix_core.io import nifti, read_volume

    folder = Path(tempfile.mkdtemp(prefix="dinomix-nifti-speed-"))
    path = _ct(folder / "ct_0000.nii.gz")
    out = {"file_mib": round(path.stat().st_size / 2**20, 1), "volume_mib": 150.0}
    isal_module = nifti.igzip
    for name, module in (("isal", isal_module), ("stdlib_gzip", gzip)):
        nifti.igzip = module
        times = []
        try:
            for _ in range(repeat):
                start = time.perf_counter()
                read_volume(path)
                times.append(time.perf_counter() - start)
        finally:
            nifti.igzip = isal_module
        out[f"read_s_{name}"] = round(sorted(times)[len(times) // 2], 3)
    path.unlink()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    doc = {**measure(), "cpu_cores": os.cpu_count(), "measured_at": time.strftime("%Y-%m-%d %H:%M")}
    print(json.dumps(doc, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
