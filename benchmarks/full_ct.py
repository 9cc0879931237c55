"""Benchmark 3b: a full 512x512x200 CT through the product's own prediction path, as ``dinomix predict`` runs it.

    .venv/bin/python -m benchmarks.full_ct --checkpoint RUN/model.pt [--shape 200,512,512] [--fov-mm 500]
        [--settings reference,default,fast] [--cli] [--device cuda] [--out benchmarks/results/inference_full_ct.json]

Why a second benchmark beside ``benchmarks.inference``: that one times the sliding window on
the raw array against MONAI's, both on the volume's own grid, which is the fair comparison of
the two inferers. A user's CT goes through more and through less: ``predict_file`` reads the
file, reorients it to LPS, resamples it to the spacing the student was trained at
(``engine/_regrid.py``), skips windows outside the body, brings the class probabilities back
to the CT's grid, takes the argmax there and writes the label file. This is that path, timed
end to end from the file on disk to the label file on disk, for each inference setting.

The CT: a held-out phantom case (``--case``) in a ``--fov-mm`` field of air resampled to
``--shape`` (z, y, x) with 10 HU noise, written as an int16 NIfTI with its spacing
(in-plane ``fov / shape``, slices ``phantom extent / shape[0]``). Its ground truth is the
phantom's labels put on the same grid (nearest neighbour). Each setting's labels get Dice
against that ground truth and label agreement (inside the body) with the ``reference``
setting's labels (float32, overlap 0.5). ``--cli`` also times ``dinomix predict`` with the
default settings in a fresh process: what a user waits for, interpreter start included.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.inference import (RESULTS, SETTINGS, _triple, ct_like, dice_per_class, load_note, machine, phantom_case,
                                  resolved_precision, timed)
from dinomix_core.engine.inferer import body_mask
from dinomix_core.engine.pipeline import LoadedModel, predict_file
from dinomix_core.engine._regrid import model_grid
from dinomix_core.io import read_volume
from dinomix_core.io.atomic import atomic_write_text
from dinomix_core.io.volume import Volume
from dinomix_core.io.writers import write_image


def labels_like(labels: np.ndarray, spacing_zyx, shape, fov_mm: float) -> np.ndarray:
    """The phantom's labels on the grid ``ct_like`` puts its image on (nearest neighbour), uint8 (z, y, x)."""
    native_mm = labels.shape[2] * spacing_zyx[2]
    pad = int(round((fov_mm - native_mm) / 2.0 / spacing_zyx[2]))
    field = np.pad(labels, ((0, 0), (pad, pad), (pad, pad))) if pad >= 0 else labels[:, -pad:pad, -pad:pad]
    out = F.interpolate(torch.from_numpy(field.astype(np.float32))[None, None], size=tuple(shape), mode="nearest")
    return out[0, 0].numpy().astype(np.uint8)


def make_ct(case: int, shape, fov_mm: float, folder: Path) -> tuple[Path, np.ndarray, tuple[float, float, float]]:
    """(NIfTI path, ground-truth labels, spacing z, y, x mm) of the CT-like test volume."""
    hu, labels, spacing = phantom_case(case)
    image = ct_like(hu, spacing, shape, fov_mm)
    grid_mm = (hu.shape[0] * spacing[0] / shape[0], fov_mm / shape[1], fov_mm / shape[2])
    origin_xyz = (-fov_mm / 2.0, -fov_mm / 2.0, 0.0)
    volume = Volume(np.round(image).astype(np.int16), spacing_zyx=grid_mm, origin_xyz=origin_xyz, modality="CT")
    path = folder / "ct.nii.gz"
    write_image(volume, path)
    return path, labels_like(labels, spacing, shape, fov_mm), grid_mm


def run_setting(loaded: LoadedModel, name: str, ct_path: Path, folder: Path) -> tuple[dict, np.ndarray]:
    loaded.inference = SETTINGS[name]
    windows = [0, 0]

    def progress(done, total):
        windows[:] = [done, total]

    out_path = folder / f"labels_{name}.nii.gz"
    labels, wall, cpu, load = timed(predict_file, loaded, ct_path, out_path, progress=progress)
    return {"setting": name, "overlap": loaded.inference.overlap, "sw_batch_size": loaded.inference.sw_batch_size,
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "load_1min_before_after": list(load),
            "windows_run": windows[0]}, np.asarray(labels.array)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="model.pt of a trained student")
    parser.add_argument("--shape", type=_triple, default=(200, 512, 512), help="CT Z,Y,X voxels")
    parser.add_argument("--fov-mm", type=float, default=500.0, help="in-plane field of view of the CT")
    parser.add_argument("--case", type=int, default=6, help="medium phantom case of data set 0 (held out)")
    parser.add_argument("--settings", default="reference,default,fast", help="comma list of reference, default, fast")
    parser.add_argument("--cli", action="store_true", help="also time `dinomix predict` (default settings) in a new process")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS / "inference_full_ct.json")
    args = parser.parse_args(argv)
    names = args.settings.split(",")
    if any(n not in SETTINGS for n in names):
        parser.error(f"--settings: choose from {', '.join(SETTINGS)}")
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory(prefix="dinomix-full-ct-") as tmp:
        folder = Path(tmp)
        ct_path, truth, grid_mm = make_ct(args.case, args.shape, args.fov_mm, folder)
        loaded = LoadedModel(args.checkpoint, device=device)
        volume = read_volume(ct_path)
        net = model_grid(loaded, volume).network
        body = body_mask(np.asarray(volume.array))
        warm = folder / "warm"
        warm.mkdir()
        # Warm-up (oneDNN kernel choice, allocator) on a small crop: not part of any timing.
        z, y, x = volume.shape
        box = np.asarray(volume.array)[: min(z, 48), y // 4 : y - y // 4, x // 4 : x - x // 4]
        crop = Volume(np.ascontiguousarray(box), spacing_zyx=grid_mm, modality="CT")
        write_image(crop, warm / "ct.nii.gz")
        run_setting(loaded, names[0], warm / "ct.nii.gz", warm)

        rows, labels = [], {}
        for name in names:
            row, labels[name] = run_setting(loaded, name, ct_path, folder)
            dice = dice_per_class(labels[name], truth, loaded.labelmap.num_classes)
            row["mean_dice_pct"] = round(100 * float(np.mean(list(dice.values()))), 2)
            row["dice_per_class_pct"] = {loaded.labelmap.names[c]: round(100 * v, 1) for c, v in dice.items()}
            rows.append(row)
            print(f"{name:10s} wall {row['wall_s']:7.2f} s  cpu {row['cpu_s']:7.2f} s  windows {row['windows_run']:4d}  "
                  f"mean Dice {row['mean_dice_pct']:6.2f}%", flush=True)
        if "reference" in labels:
            for row in rows:
                row["label_agreement_in_body"] = float((labels[row["setting"]] == labels["reference"])[body].mean())

        cli = None
        if args.cli:
            cmd = [sys.executable, "-m", "dinomix_core.cli", "predict", "--checkpoint", str(args.checkpoint),
                   "--input", str(ct_path), "--output", str(folder / "cli.nii.gz"), "--device", args.device]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            cli = {"command": "dinomix predict --checkpoint M --input ct.nii.gz --output labels.nii.gz",
                   "wall_s": round(time.perf_counter() - t0, 2)}
            print(f"dinomix predict (new process, default settings): {cli['wall_s']:.2f} s", flush=True)

    default = next((r for r in rows if r["setting"] == "default"), None)
    result = {
        "benchmark": "a full CT through predict_file (read, LPS, resample to the student's spacing, "
                     "sliding window, probabilities back to the CT's grid, argmax, write)",
        "seconds_full_ct_default": default["wall_s"] if default else None,
        "cli": cli,
        "rows": rows,
        "ct": {"shape_zyx": list(args.shape), "spacing_zyx_mm": [round(v, 4) for v in grid_mm], "fov_mm": args.fov_mm,
               "phantom_case": args.case, "body_fraction": round(float(body.mean()), 4)},
        "network_grid": {"shape_zyx": list(net.shape), "spacing_zyx_mm": list(loaded.target_spacing or grid_mm)},
        "network": {**{k: loaded.meta["student"].get(k) for k in ("name", "width", "depth", "num_classes")},
                    "checkpoint": str(args.checkpoint), "trained_steps": loaded.meta.get("steps"),
                    "window": list(loaded.window), "method": loaded.meta.get("method")},
        "precision": resolved_precision(SETTINGS["default"], device),
        "machine": machine(device),
        "note": "wall and process-CPU seconds of one run each, file on disk to label file on disk; "
                + load_note([r["load_1min_before_after"] for r in rows]),
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
