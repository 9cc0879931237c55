"""Benchmark 3: sliding-window inference with the product's own network, against MONAI's, and per lever.

    # ours (the product's inference settings) vs MONAI, same network / window / overlap / batch:
    .venv/bin/python -m benchmarks.inference --checkpoint RUN/model.pt [--settings default|fast|reference]
        [--shape 200,512,512] [--fov-mm 500] [--overlap F] [--sw-batch-size N] [--repeat N] [--device cuda]
    # each speed lever on held-out phantom cases: time, Dice, label agreement with the reference:
    .venv/bin/python -m benchmarks.inference --levers --checkpoint RUN/model.pt --data PHANTOM --cases ID,ID
    # the aggregation-cost study: a width-4, depth-3 random network, where MONAI's blending dominates:
    .venv/bin/python -m benchmarks.inference --random --width 4 --depth 3 --out benchmarks/results/inference_aggregation.json

The network is a trained ``model.pt`` (``dinomix train``; the figures in benchmarks/README.md
section 3 use the default student, ``unet3d`` width 16, depth 4, trained on the phantom).
``--random`` (or no ``--checkpoint``) builds a seeded random ``unet3d`` of ``--width`` /
``--depth`` instead: real times, but not a trained model's labels. ``--quick``: a small
volume, a smoke test (inference_quick.json).

Ours vs MONAI: both run the same network, window, overlap, window batch and Gaussian blending
(sigma = 1/8 window) and take the argmax of the blended softmax, back to back in this
process (MONAI first, then ours, ``--repeat`` times: the median is reported, with the load
average before and after each run). MONAI runs the network as it is (eager, float32 on CPU,
autocast on CUDA), ours with the chosen ``inference_settings`` (precision, layout, compile)
and skips windows outside the body; its time includes the body mask. Label agreement is
counted inside the body (outside it ours is background by construction).

The volume: a phantom case (``--case``, default 6: held out by the benchmark's training
run) in a ``--fov-mm`` field of air, resampled to ``--shape`` (z, y, x) with 10 HU noise.

Writes benchmarks/results/inference.json (``--levers``: inference_levers.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dinomix_core.data.phantom import PHANTOM_SIZES, generate_case
from dinomix_core.engine._windows import WindowGrid, windows_touching
from dinomix_core.engine.inference_settings import DEFAULT, FAST, REFERENCE, InferenceSettings
from dinomix_core.engine.inferer import _autocast, body_mask, cpu_has_native_bf16, predict_labels, predict_volume
from dinomix_core.io import clip_normalize
from dinomix_core.io.atomic import atomic_write_text
from dinomix_core.models import create_student

RESULTS = Path(__file__).resolve().parent / "results"
NUM_CLASSES = 14  # background + the 13 BTCV organs
FOV_TABLE_MM = (384, 420, 460, 500)
SETTINGS = {"default": DEFAULT, "fast": FAST, "reference": REFERENCE}


# --- volumes --------------------------------------------------------------------------------


def phantom_case(index: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """HU (float32) and labels (uint8) of medium phantom case ``index`` of data set 0, (z, y, x)."""
    image, labels = generate_case(index, 0, "medium")
    return image.array.astype(np.float32), np.asarray(labels.array), PHANTOM_SIZES["medium"].spacing_zyx


def ct_like(phantom: np.ndarray, spacing_zyx, shape, fov_mm: float, noise_hu: float = 10.0, seed: int = 0) -> np.ndarray:
    """The phantom in a ``fov_mm`` square field of air, resampled to ``shape`` (z, y, x), in HU."""
    native_mm = phantom.shape[2] * spacing_zyx[2]
    pad = int(round((fov_mm - native_mm) / 2.0 / spacing_zyx[2]))
    if pad >= 0:
        field = np.pad(phantom, ((0, 0), (pad, pad), (pad, pad)), constant_values=-1000.0)
    else:
        field = phantom[:, -pad:pad, -pad:pad]
    hu = F.interpolate(torch.from_numpy(field)[None, None], size=shape, mode="trilinear", align_corners=False)[0, 0]
    hu += noise_hu * torch.randn(hu.shape, generator=torch.Generator().manual_seed(seed))
    return hu.numpy()


def windows_run_fraction(hu: np.ndarray, window, overlap: float) -> tuple[int, int]:
    grid = WindowGrid.build(hu.shape, window, (overlap,) * 3)
    return sum(windows_touching(body_mask(hu), grid)), len(grid)


# --- the two inferers -----------------------------------------------------------------------


def run_monai(model, image: np.ndarray, window, overlap, sw_batch_size, device) -> np.ndarray:
    from monai.inferers import sliding_window_inference  # benchmark-only dependency

    x = torch.from_numpy(image)[None, None].to(device)
    autocast = _autocast(device, True, "auto") if device.type == "cuda" else nullcontext()

    def predictor(w):
        with autocast:  # on CUDA the same autocast dtype as our inferer picks
            out = model(w)
        return torch.softmax(out.float(), dim=1)

    with torch.inference_mode():
        out = sliding_window_inference(
            x, roi_size=window, sw_batch_size=sw_batch_size, predictor=predictor, overlap=overlap,
            mode="gaussian", sigma_scale=0.125,
        )
        return out[0].argmax(dim=0).to(torch.uint8).cpu().numpy()


def run_ours(model, hu: np.ndarray, image: np.ndarray, window, settings: InferenceSettings, device, skip: bool):
    mask = body_mask(hu) if skip else None
    labels = predict_labels(model, image, window=window, device=device, skip_mask=mask, **settings.options())
    return labels, mask


def timed(fn, *args, **kwargs):
    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, time.process_time() - cpu, (round(load, 2), round(os.getloadavg()[0], 2))


def load_note(loads, threads: int | None = None) -> str:
    """Whether anything else ran, judged from the 1-minute load averages before / after each run."""
    threads = threads or torch.get_num_threads()
    peak = max((v for pair in loads for v in pair), default=0.0)
    if peak > threads + 0.75:
        return f"other processes shared the CPU: 1-minute load up to {peak:.1f} with {threads} threads of this run"
    return f"nothing else ran: 1-minute load at most {peak:.1f}, about this run's own {threads} threads"


def resolved_precision(settings: InferenceSettings, device: torch.device) -> str:
    if settings.precision != "auto":
        return settings.precision
    if device.type == "cuda":
        return "bfloat16 (auto, CUDA)" if torch.cuda.is_bf16_supported() else "float16 (auto, CUDA)"
    return "bfloat16 (auto: native bf16 CPU)" if cpu_has_native_bf16() else "float32 (auto: this CPU has no native bf16)"


def load_network(args, device):
    """(model in eval mode, description) from ``--checkpoint`` or a seeded random ``unet3d``."""
    if args.random:
        torch.manual_seed(0)
        model = create_student("unet3d", num_classes=NUM_CLASSES, width=args.width, depth=args.depth)
        return model.eval().to(device), {"name": "unet3d", "width": args.width, "depth": args.depth,
                                         "num_classes": NUM_CLASSES, "weights": "random, seed 0"}
    from dinomix_core.engine.pipeline import LoadedModel

    loaded = LoadedModel(args.checkpoint, device=device)
    student = loaded.meta["student"]
    steps = loaded.meta.get("steps")
    return loaded.model.eval(), {
        "name": student.get("name"), "width": student.get("width"), "depth": student.get("depth"),
        "num_classes": student.get("num_classes"), "weights": f"trained: {args.checkpoint}",
        "trained_steps": steps, "trained_patch": list(loaded.window),
    }


def machine(device) -> dict:
    import monai

    return {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "monai": monai.__version__, "cpu_native_bf16": cpu_has_native_bf16(),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
    }


# --- ours vs MONAI --------------------------------------------------------------------------


def compare(args, device) -> dict:
    settings = SETTINGS[args.settings]
    settings = replace(settings, overlap=args.overlap if args.overlap is not None else settings.overlap,
                       sw_batch_size=args.sw_batch_size or settings.sw_batch_size)
    shape, window = args.shape, args.window
    phantom, _, spacing = phantom_case(args.case)
    hu = ct_like(phantom, spacing, shape, args.fov_mm)
    image = clip_normalize(hu)
    model, network = load_network(args, device)

    # Warm-up (kernel selection, allocator, compilation when on) on a small corner volume.
    small = tuple(min(s, 2 * w - w // 2) for s, w in zip(shape, window))
    cut = tuple(slice(0, n) for n in small)
    t0 = time.perf_counter()
    run_monai(model, image[cut], window, settings.overlap, settings.sw_batch_size, device)
    run_ours(model, hu[cut], image[cut], window, settings, device, skip=True)
    warm_s = time.perf_counter() - t0

    runs = {"monai": [], "ours": [], "ours_no_skip": []}
    for _ in range(args.repeat):
        labels_monai, s, c, load = timed(run_monai, model, image, window, settings.overlap, settings.sw_batch_size, device)
        runs["monai"].append((s, c, load))
        (labels_ours, mask), s, c, load = timed(run_ours, model, hu, image, window, settings, device, skip=True)
        runs["ours"].append((s, c, load))
        if args.breakdown:
            (labels_all, _), s, c, load = timed(run_ours, model, hu, image, window, settings, device, skip=False)
            runs["ours_no_skip"].append((s, c, load))
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in runs.items() if v}
    grid = WindowGrid.build(shape, window, (settings.overlap,) * 3)
    same = labels_ours == labels_monai
    result = {
        "benchmark": "sliding-window inference, dinomix predict_labels vs monai.inferers.sliding_window_inference",
        "ratio_vs_monai": round(med["ours"][0] / med["monai"][0], 4),
        "ratio_vs_monai_cpu_time": round(med["ours"][1] / med["monai"][1], 4),
        "label_agreement": float(same[mask].mean()),
        "label_agreement_all": float(same.mean()),
        "seconds_ours": round(med["ours"][0], 2),
        "seconds_monai": round(med["monai"][0], 2),
        "cpu_seconds_ours": round(med["ours"][1], 2),
        "cpu_seconds_monai": round(med["monai"][1], 2),
        "runs": {k: [{"wall_s": round(s, 2), "cpu_s": round(c, 2), "load_1min_before_after": list(ld)} for s, c, ld in v]
                 for k, v in runs.items() if v},
        "warm_up_seconds": round(warm_s, 2),
        "network": network,
        "settings": args.settings,
        "precision": resolved_precision(settings, device),
        "channels_last": settings.channels_last if settings.channels_last is not None else device.type == "cpu",
        "compile": settings.compile,
        "overlap": settings.overlap,
        "sw_batch_size": settings.sw_batch_size,
        "window": list(window),
        "volume_shape_zyx": list(shape),
        "fov_mm": args.fov_mm,
        "phantom_case": args.case,
        "windows_total": len(grid),
        "windows_run_ours": sum(windows_touching(mask, grid)),
        "body_fraction": round(float(mask.mean()), 4),
        "machine": machine(device),
        "note": "median of --repeat runs; wall and process-CPU seconds; "
                + load_note([ld for v in runs.values() for _, _, ld in v]),
    }
    if args.breakdown:
        result["seconds_ours_no_skip"] = round(med["ours_no_skip"][0], 2)
        result["cpu_seconds_ours_no_skip"] = round(med["ours_no_skip"][1], 2)
        result["label_agreement_no_skip_all"] = float((labels_all == labels_monai).mean())
    if args.fov_table:
        result["windows_run_fraction_by_fov_mm"] = {
            str(fov): round(np.divide(*windows_run_fraction(ct_like(phantom, spacing, shape, fov), window, settings.overlap)), 4)
            for fov in FOV_TABLE_MM
        }
    print(f"volume {shape} (z, y, x), window {window}, overlap {settings.overlap}, batch {settings.sw_batch_size}, "
          f"{network['name']} width {network['width']} depth {network['depth']} ({network['weights']}), {device}, "
          f"ours: {args.settings} settings, precision {result['precision']}, compile {settings.compile}")
    for name, (s, c) in med.items():
        print(f"{name:14s} wall {s:8.2f} s  cpu {c:8.2f} s")
    print(f"ratio ours/MONAI {result['ratio_vs_monai']:.3f} (wall), {result['ratio_vs_monai_cpu_time']:.3f} (cpu); "
          f"windows {result['windows_run_ours']} of {len(grid)}; label agreement inside the body "
          f"{result['label_agreement']:.6f}, overall {result['label_agreement_all']:.6f}")
    return result


# --- levers ---------------------------------------------------------------------------------


def dice_per_class(pred: np.ndarray, gt: np.ndarray, classes: int) -> dict[int, float]:
    """Dice of every foreground class present in ``gt`` or ``pred`` (absent from both: left out)."""
    conf = np.bincount(gt.astype(np.int64).ravel() * classes + pred.astype(np.int64).ravel(),
                       minlength=classes * classes).reshape(classes, classes)
    out = {}
    for c in range(1, classes):
        inter, size = conf[c, c], conf[c].sum() + conf[:, c].sum()
        if size:
            out[c] = float(2.0 * inter / size)
    return out


def levers(args, device) -> dict:
    from dinomix_core.engine.pipeline import LoadedModel
    from dinomix_core.io import read_volume

    loaded = LoadedModel(args.checkpoint, device=device)
    window = tuple(args.lever_window) if args.lever_window else loaded.window
    data = Path(args.data)
    cases = []
    for cid in args.cases.split(","):
        volume = read_volume(data / "imagesTr" / f"{cid}_0000.nii.gz")
        gt = np.asarray(read_volume(data / "labelsTr" / f"{cid}.nii.gz").array)
        if args.crop:  # a central (z, y, x) crop: for slow levers (bf16 emulated on AVX2)
            box = tuple(slice((n - c) // 2, (n - c) // 2 + c) for n, c in zip(volume.shape, args.crop))
            volume, gt = volume.with_array(np.ascontiguousarray(np.asarray(volume.array)[box])), gt[box]
        cases.append((cid, volume, gt))
    classes = loaded.labelmap.num_classes
    ref = REFERENCE
    table = [
        ("reference: float32, overlap 0.5, batch 2, channels-last", ref, {}),
        ("contiguous layout (channels_last off)", replace(ref, channels_last=False), {}),
        ("batch 1", replace(ref, sw_batch_size=1), {}),
        ("batch 4", replace(ref, sw_batch_size=4), {}),
        ("overlap 0.25", replace(ref, overlap=0.25), {}),
        ("overlap 0", replace(ref, overlap=0.0), {}),
        ("no body skip", ref, {"skip_outside_body": False}),
        ("test-time flips (y, x)", ref, {"tta_flips": (1, 2)}),
        ("torch.compile (first call compiles)", replace(ref, compile=True), {}),
        ("torch.compile (compiled)", replace(ref, compile=True), {}),
    ]
    if args.bf16:
        table.append(("bfloat16 autocast", replace(ref, precision="bfloat16"), {}))
    only = set(args.only.split(",")) if args.only else None
    rows, reference_labels = [], {}
    for index, (name, settings, extra) in enumerate(table):
        if only is not None and index not in only and str(index) not in only:
            continue
        per_case = []
        for cid, volume, gt in cases:
            out, s, c, load = timed(predict_volume, loaded.model, volume, preprocess=loaded.preprocess, window=window,
                                    device=device, **settings.options(), **extra)
            labels = np.asarray(out.array)
            body = body_mask(np.asarray(volume.array))
            saved = Path(args.labels_dir) / f"{cid}_reference.npy" if args.labels_dir else None
            if index == 0:
                reference_labels[cid] = labels
                if saved is not None:  # for rows run in other processes (--only)
                    saved.parent.mkdir(parents=True, exist_ok=True)
                    np.save(saved, labels)
            elif cid not in reference_labels and saved is not None and saved.is_file():
                reference_labels[cid] = np.load(saved)
            agree = float((labels == reference_labels[cid])[body].mean()) if cid in reference_labels else None
            grid = WindowGrid.build(tuple(max(a, b) for a, b in zip(volume.shape, window)), window, (settings.overlap,) * 3)
            dice = dice_per_class(labels, gt, classes)
            per_case.append({"case": cid, "wall_s": round(s, 2), "cpu_s": round(c, 2), "load_1min_before_after": list(load),
                             "windows": len(grid), "mean_dice": float(np.mean(list(dice.values()))) if dice else None,
                             "label_agreement_in_body": agree, "dice_per_class": {str(k): round(v, 4) for k, v in dice.items()}})
        row = {
            "lever": name, "overlap": settings.overlap, "sw_batch_size": settings.sw_batch_size,
            "precision": resolved_precision(settings, device), "channels_last": settings.channels_last, "compile": settings.compile,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in extra.items()},
            "wall_s": round(sum(p["wall_s"] for p in per_case), 2), "cpu_s": round(sum(p["cpu_s"] for p in per_case), 2),
            "mean_dice_pct": round(100 * float(np.mean([p["mean_dice"] for p in per_case])), 3),
            "label_agreement_in_body": (float(np.mean([p["label_agreement_in_body"] for p in per_case]))
                                        if all(p["label_agreement_in_body"] is not None for p in per_case) else None),
            "cases": per_case,
        }
        rows.append(row)
        agree = row["label_agreement_in_body"]
        print(f"{name:55s} wall {row['wall_s']:8.2f} cpu {row['cpu_s']:8.2f} dice {row['mean_dice_pct']:7.3f} "
              f"agree {agree if agree is None else round(agree, 6)} load {[p['load_1min_before_after'] for p in per_case]}",
              flush=True)
    return {
        "benchmark": "inference levers on held-out phantom cases, each against the float32 overlap-0.5 reference",
        "checkpoint": args.checkpoint, "data": args.data, "cases": args.cases.split(","), "window": list(window),
        "rows": rows, "machine": machine(device),
        "note": "wall / CPU seconds summed over the cases; Dice in % (mean over organs present); agreement inside the body",
    }


def _triple(text: str) -> tuple[int, int, int]:
    values = tuple(int(v) for v in text.split(","))
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected Z,Y,X, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--checkpoint", help="model.pt of a trained student (see the module docstring)")
    parser.add_argument("--random", action="store_true",
                        help="a seeded random unet3d of --width / --depth instead (also without --checkpoint): speed only")
    parser.add_argument("--quick", action="store_true", help="a 48x160x160 volume and 32x64x64 windows: a smoke test")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--settings", choices=sorted(SETTINGS), default="default", help="our inference settings")
    parser.add_argument("--overlap", type=float, default=None, help="default: the settings' overlap")
    parser.add_argument("--sw-batch-size", type=int, default=None, help="default: the settings' batch")
    parser.add_argument("--shape", type=_triple, default=(200, 512, 512), help="volume Z,Y,X voxels")
    parser.add_argument("--window", type=_triple, default=(64, 128, 128), help="window Z,Y,X voxels")
    parser.add_argument("--fov-mm", type=float, default=500.0, help="display field of view of the timed volume")
    parser.add_argument("--case", type=int, default=6, help="medium phantom case of data set 0")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--breakdown", action="store_true", help="also time ours without the body mask")
    parser.add_argument("--fov-table", action="store_true", help="windows touching the body by field of view")
    parser.add_argument("--levers", action="store_true", help="the per-lever table on --data --cases")
    parser.add_argument("--data", help="with --levers: the phantom data set folder")
    parser.add_argument("--cases", default="phantom_006,phantom_007", help="with --levers: held-out case ids")
    parser.add_argument("--lever-window", type=_triple, default=None, help="with --levers: default the checkpoint's")
    parser.add_argument("--crop", type=_triple, default=None, help="with --levers: a central Z,Y,X crop of each case")
    parser.add_argument("--bf16", action="store_true", help="with --levers: also bfloat16 autocast (slow on AVX2 CPUs)")
    parser.add_argument("--only", default=None, help="with --levers: comma list of row numbers (0 = reference)")
    parser.add_argument("--labels-dir", default=None,
                        help="with --levers: keep the reference labels here, so rows run apart (--only) are compared too")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU")
    if args.levers and (args.random or not args.checkpoint or not args.data):
        parser.error("--levers needs --checkpoint and --data")
    if not args.checkpoint:
        args.random = True
        print("note: no --checkpoint: a random network; its times are real, its labels are not a trained model's")
    if args.quick:
        args.shape, args.window = (48, 160, 160), (32, 64, 64)
    device = torch.device(args.device)
    result = levers(args, device) if args.levers else compare(args, device)
    name = "inference_levers.json" if args.levers else "inference_quick.json" if args.quick else "inference.json"
    out = args.out or RESULTS / name
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
