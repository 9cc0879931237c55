"""Peak memory and time of predicting a full-size CT with uncertainty, before and after bounding it.

    .venv/bin/python -m benchmarks.predict_memory [--slices 300] [--size 512] [--width 16 --depth 4]
                                                  [--modes before,after] [--out results/predict_memory.json]

What `train --project` and the GUI run for every unlabeled case is
``pipeline.predict_with_uncertainty``: labels, a float16 per-voxel entropy map and the case's
uncertainty score. "before" is that function as it was (kept here verbatim as
:func:`full_volume_path`): the inferer's (C, Z, Y, X) float32 accumulator, then a second
(C, Z, Y, X) float32 probability volume, then entropy and the score from it. "after" is the
current function (engine/_uncertainty.py): a window-deep rolling accumulator whose finished
z-slabs are reduced to labels / entropy / per-class sums at once.

Each mode runs in a fresh interpreter. After the model is loaded and the volume built, the
peak-RSS counter is reset (Linux ``/proc/self/clear_refs``), so "peak during predict" is what
the prediction itself adds on top of the resident image and model; the whole process' peak
is listed too. The volume: a synthetic 512 x 512 x 300 CT-like int16 volume (air; a body
ellipse of soft tissue with noise; liver-, spleen- and kidney-like blobs; a bone ring),
0.8 x 0.8 x 1.5 mm. The student: ``unet3d`` (default width 16, depth 4, 14 classes, random
seeded weights: memory and time do not depend on what it learned), window 64 x 128 x 128,
the product's inference settings (``engine/inference_settings.py``, recorded in the JSON), on
the CPU. ``labels`` / ``labels_before``: the labels-only prediction of ``dinomix predict``,
streamed slab by slab now, through one whole-volume accumulator before.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
NUM_CLASSES = 14  # background + the 13 BTCV organs
WINDOW = (64, 128, 128)


def ct_like(slices: int, size: int, seed: int = 0) -> np.ndarray:
    """(z, y, x) int16 HU: air, a body ellipse with organ blobs and a bone ring, 15 HU noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size].astype(np.float32) / size
    body = ((x - 0.5) / 0.40) ** 2 + ((y - 0.5) / 0.30) ** 2 <= 1.0
    ring = body & (((x - 0.5) / 0.37) ** 2 + ((y - 0.5) / 0.27) ** 2 > 0.92)
    organs = [(0.38, 0.45, 0.12, 60), (0.66, 0.42, 0.06, 50), (0.42, 0.62, 0.04, 30), (0.60, 0.62, 0.04, 30)]
    out = np.full((slices, size, size), -1000, dtype=np.int16)
    for z in range(slices):
        sl = np.where(body, 40, -1000).astype(np.int16)
        for cx, cy, r, hu in organs:
            sl[(x - cx) ** 2 + (y - cy) ** 2 <= (r * (0.8 + 0.2 * np.sin(z / 25.0))) ** 2] = hu
        sl[ring] = 700
        sl[body] += rng.normal(0.0, 15.0, int(body.sum())).astype(np.int16)
        out[z] = sl
    return out


def full_volume_path(model, volume, *, class_weights=None):
    """``pipeline.predict_with_uncertainty`` as it was before bounding (commit fad137c), verbatim."""
    from dinomix_core.engine.inferer import body_mask
    from dinomix_core.engine.pipeline import voxel_uncertainty
    from dinomix_core.project.ranking import uncertainty_summary

    body = body_mask(np.asarray(volume.array)) if (volume.modality or "").upper() == "CT" else None
    labels, probs = model.predict(volume, return_probs=True, skip_mask=body)
    uncertainty = voxel_uncertainty(probs)
    score, per_class = uncertainty_summary(probs.numpy(), class_weights)
    del probs
    if body is not None:
        outside = ~body
        labels.array[outside] = 0
        uncertainty[outside] = 0
    return labels, uncertainty, float(score), per_class


def whole_volume_labels(model, volume):
    """Labels the way ``predict_labels`` made them before streaming: one (C, Z, Y, X) float32
    accumulator of weighted probabilities for the whole volume, then the argmax slab by slab.
    (The old labels path kept no weight sums; the accumulator here has them, Z x Y x X float32
    more, 0.3 GB at 300 x 512 x 512.)"""
    import torch

    from dinomix_core.engine.inferer import _accumulate, body_mask

    hu = np.asarray(volume.array)
    body = body_mask(hu)
    acc = _accumulate(model.model, model.preprocess(hu), window=model.window, skip_mask=body, device=model.device,
                      **model.inference.options())
    zc, yc, xc = acc.crop
    out = np.empty(hu.shape, np.uint8)
    for z0 in range(0, hu.shape[0], 8):
        z1 = min(z0 + 8, hu.shape[0])
        out[z0:z1] = acc.scores[:, zc.start + z0 : zc.start + z1, yc, xc].argmax(dim=0).numpy()
    out[~body] = 0
    del acc
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return volume.with_array(out, source=None, modality="labels")


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def child(mode: str, checkpoint: str, slices: int, size: int) -> dict:
    import torch

    from dinomix_core.engine.pipeline import LoadedModel, predict_with_uncertainty
    from dinomix_core.io import Volume

    model = LoadedModel(checkpoint, device="cpu")
    volume = Volume(ct_like(slices, size), (1.5, 0.8, 0.8), (0.0, 0.0, 0.0), modality="CT")
    windows = []
    progress = lambda done, total: windows.append((done, total))  # noqa: E731
    rss_ready = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: peak from here on
    start, cpu0 = time.perf_counter(), time.process_time()
    if mode == "forward":  # one batch of 2 windows through the student: its activation memory alone
        x = torch.zeros((2, 1, *WINDOW)).contiguous(memory_format=torch.channels_last_3d)
        net = model.model.to(memory_format=torch.channels_last_3d)
        with torch.inference_mode():
            net(x)
        return {"mode": mode, "seconds": round(time.perf_counter() - start, 2),
                "rss_before_predict_mib": round(rss_ready / 1024, 1),
                "peak_rss_during_predict_mib": round(_status_kib("VmHWM") / 1024, 1),
                "extra_mib": round((_status_kib("VmHWM") - rss_ready) / 1024, 1)}
    if mode in ("labels", "labels_before"):  # what `dinomix predict` runs: labels only
        labels = model.predict(volume, progress=progress) if mode == "labels" else whole_volume_labels(model, volume)
        return {**_measured(mode, start, cpu0, rss_ready, windows),
                "labels_checksum": int(labels.array.astype(np.int64).sum()), "torch_threads": torch.get_num_threads()}
    if mode == "before":
        # The old path had no progress hook of its own; count windows through the model.
        labels, unc, score, per_class = full_volume_path(model, volume)
    else:
        labels, unc, score, per_class = predict_with_uncertainty(model, volume, progress=progress)
    return {
        **_measured(mode, start, cpu0, rss_ready, windows),
        "score": score, "per_class": {str(k): round(v, 5) for k, v in per_class.items()},
        "labels_checksum": int(labels.array.astype(np.int64).sum()),
        "uncertainty_mean": float(unc.astype(np.float64).mean()), "torch_threads": torch.get_num_threads(),
    }


def _measured(mode: str, start: float, cpu0: float, rss_ready: int, windows: list) -> dict:
    """Time, CPU time and peak RSS since ``start`` (the counter was reset at ``rss_ready``)."""
    return {
        "mode": mode, "seconds": round(time.perf_counter() - start, 2),
        "cpu_seconds": round(time.process_time() - cpu0, 2),
        "rss_before_predict_mib": round(rss_ready / 1024, 1),
        "peak_rss_during_predict_mib": round(_status_kib("VmHWM") / 1024, 1),
        "peak_rss_process_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "windows_run": windows[-1][1] if windows else None,
    }


def write_checkpoint(path: Path, width: int, depth: int) -> None:
    import torch

    from dinomix_core.engine.checkpoint import MODEL_KIND, save_checkpoint
    from dinomix_core.engine.config import TrainConfig
    from dinomix_core.engine.trainer import TeacherInfo, model_meta
    from dinomix_core.io import LabelMap
    from dinomix_core.models import create_student

    torch.manual_seed(0)
    student = create_student("unet3d", num_classes=NUM_CLASSES, width=width, depth=depth)
    labelmap = LabelMap.preset("btcv13")
    meta = model_meta(TrainConfig(patch_size=WINDOW), student, labelmap, TeacherInfo(), 0)
    save_checkpoint(path, kind=MODEL_KIND, meta=meta, tensors={"state_dict": student.state_dict()})


def _settings() -> dict:
    from dinomix_core.engine.inference_settings import inference_settings

    return inference_settings(False).options()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512, help="in-plane voxels (square)")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--modes", default="before,after",
                        help="before, after (with uncertainty), labels_before, labels (labels only, as `dinomix predict`), "
                             "and/or forward (one 2-window batch: the student's activation memory)")
    parser.add_argument("--out", type=Path, default=RESULTS / "predict_memory.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.checkpoint, args.slices, args.size)))
        return 0

    volume_mib = args.slices * args.size * args.size * 2 / 2**20
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "model.pt"
        write_checkpoint(ckpt, args.width, args.depth)
        for mode in args.modes.split(","):
            cmd = [sys.executable, "-m", "benchmarks.predict_memory", "--child", mode, "--checkpoint", str(ckpt),
                   "--slices", str(args.slices), "--size", str(args.size)]
            load = os.getloadavg()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"mode {mode} failed (exit {proc.returncode}; -9 is the kernel's out-of-memory kill)")
            run = json.loads(proc.stdout.strip().splitlines()[-1])
            run["load_average_before"] = [round(v, 2) for v in load]
            if mode != "forward":
                run["extra_mib"] = round(run["peak_rss_during_predict_mib"] - run["rss_before_predict_mib"], 1)
            run["extra_over_volume"] = round(run["extra_mib"] / volume_mib, 2)  # what predicting adds, in volumes
            runs.append(run)
            print(json.dumps(run))
    result = {
        "benchmark": "predict_with_uncertainty peak RSS and time on CPU, full-volume probabilities (before) vs "
                     "slab-by-slab uncertainty (after)",
        "volume_shape_zyx": [args.slices, args.size, args.size], "volume_dtype": "int16",
        "volume_mib": round(volume_mib, 1),
        "classes": NUM_CLASSES, "window": list(WINDOW), "inference_settings": _settings(),
        "network": {"name": "unet3d", "width": args.width, "depth": args.depth, "weights": "random, seed 0"},
        "runs": runs,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "note": "peak_rss_during_predict_mib: VmHWM after resetting it once the model and volume were ready, so it "
                "includes the resident image and model; other processes may share the CPU (see load averages)",
    }
    from dinomix_core.io.atomic import atomic_write_text

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
