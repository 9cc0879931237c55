"""Benchmark 3: our sliding-window inference against MONAI's, same network and settings.

    .venv/bin/python -m benchmarks.inference [--device cpu|cuda] [--quick] [--breakdown]

Both runs use the same student (``create_student("unet3d")``, random but seeded weights),
window, overlap, window batch size and Gaussian blending (sigma = 1/8 of the window), and
both blend softmax probabilities and take the argmax. MONAI runs with its own defaults
otherwise, inside ``torch.inference_mode`` like ours. Our time includes computing the body
mask from the HU image.

The volume: the project's procedural abdominal CT phantom (``data.phantom``, medium size,
384 mm field of view), placed in a ``--fov-mm`` display field of air (default 500 mm, the
usual full scan field) and resampled to 200 x 512 x 512 voxels (z, y, x) with 10 HU noise.
How much of it is air decides how many windows can be skipped, so the result also lists,
for several fields of view, the fraction of windows that touch the body (no network needed).

Writes benchmarks/results/inference.json (inference_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dinomix_core.data.phantom import PHANTOM_SIZES, generate_case
from dinomix_core.engine._windows import WindowGrid, windows_touching
from dinomix_core.engine.inferer import body_mask, predict_labels
from dinomix_core.io import clip_normalize
from dinomix_core.io.atomic import atomic_write_text
from dinomix_core.models import create_student

RESULTS = Path(__file__).resolve().parent / "results"
NUM_CLASSES = 14  # background + the 13 BTCV organs
FULL = dict(shape=(200, 512, 512), window=(64, 128, 128))
QUICK = dict(shape=(48, 160, 160), window=(32, 64, 64))
FOV_TABLE_MM = (384, 420, 460, 500)


def phantom_hu() -> tuple[np.ndarray, tuple[float, float, float]]:
    image, _ = generate_case(0, 0, "medium")
    return image.array.astype(np.float32), PHANTOM_SIZES["medium"].spacing_zyx


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


def run_monai(model, image: np.ndarray, window, overlap, sw_batch_size, device, amp) -> np.ndarray:
    from monai.inferers import sliding_window_inference  # benchmark-only dependency

    x = torch.from_numpy(image)[None, None].to(device)

    def predictor(w):
        if amp and device.type == "cuda":  # the same autocast dtype as our inferer picks
            ctx = torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        else:
            ctx = nullcontext()
        with ctx:
            out = model(w)
        return torch.softmax(out.float(), dim=1)

    with torch.inference_mode():
        out = sliding_window_inference(
            x, roi_size=window, sw_batch_size=sw_batch_size, predictor=predictor, overlap=overlap,
            mode="gaussian", sigma_scale=0.125,
        )
        labels = out[0].argmax(dim=0).to(torch.uint8).cpu().numpy()
    return labels


def run_ours(model, hu: np.ndarray, image: np.ndarray, window, overlap, sw_batch_size, device, amp, skip: bool) -> tuple[np.ndarray, np.ndarray | None]:
    mask = body_mask(hu) if skip else None
    labels = predict_labels(
        model, image, window=window, overlap=overlap, sw_batch_size=sw_batch_size, device=device, amp=amp, skip_mask=mask,
    )
    return labels, mask


def timed(fn, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="small volume, a smoke test")
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default: benchmarks/results/inference[_quick].json)")
    parser.add_argument("--breakdown", action="store_true", help="also time ours without the body mask")
    parser.add_argument("--width", type=int, default=4, help="student width (channels at full resolution)")
    parser.add_argument("--depth", type=int, default=3, help="student depth (number of down-samplings)")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--sw-batch-size", type=int, default=4)
    parser.add_argument("--fov-mm", type=float, default=500.0, help="display field of view of the timed volume")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU")
    device = torch.device(args.device)
    amp = device.type == "cuda"
    cfg = QUICK if args.quick else FULL
    shape, window = cfg["shape"], cfg["window"]

    phantom, spacing = phantom_hu()
    hu = ct_like(phantom, spacing, shape, args.fov_mm)
    image = clip_normalize(hu)
    torch.manual_seed(0)
    model = create_student("unet3d", num_classes=NUM_CLASSES, width=args.width, depth=args.depth).eval().to(device)

    # Warm-up (kernel selection, allocator) on a small corner volume, both code paths.
    small = tuple(min(s, 2 * w - w // 2) for s, w in zip(shape, window))
    warm_hu, warm_img = hu[: small[0], : small[1], : small[2]], image[: small[0], : small[1], : small[2]]
    run_monai(model, warm_img, window, args.overlap, args.sw_batch_size, device, amp)
    run_ours(model, warm_hu, warm_img, window, args.overlap, args.sw_batch_size, device, amp, skip=True)

    load_before = os.getloadavg()
    labels_monai, s_monai, cpu_monai = timed(run_monai, model, image, window, args.overlap, args.sw_batch_size, device, amp)
    (labels_ours, mask), s_ours, cpu_ours = timed(
        run_ours, model, hu, image, window, args.overlap, args.sw_batch_size, device, amp, skip=True
    )
    breakdown = {}
    if args.breakdown:
        (labels_all, _), s_all, cpu_all = timed(
            run_ours, model, hu, image, window, args.overlap, args.sw_batch_size, device, amp, skip=False
        )
        breakdown = {
            "seconds_ours_no_skip": round(s_all, 2),
            "cpu_seconds_ours_no_skip": round(cpu_all, 2),
            "label_agreement_no_skip_all": float((labels_all == labels_monai).mean()),
        }
    load_after = os.getloadavg()

    grid = WindowGrid.build(shape, window, (args.overlap,) * 3)
    run = sum(windows_touching(mask, grid))
    same = labels_ours == labels_monai
    fov_table = {}
    for fov in FOV_TABLE_MM:
        done, total = windows_run_fraction(ct_like(phantom, spacing, shape, fov), window, args.overlap)
        fov_table[str(fov)] = round(done / total, 4)

    import monai

    result = {
        "benchmark": "sliding-window inference, dinomix predict_labels vs monai.inferers.sliding_window_inference",
        "quick": args.quick,
        "ratio_vs_monai": round(s_ours / s_monai, 4),
        "ratio_vs_monai_cpu_time": round(cpu_ours / cpu_monai, 4),
        "label_agreement": float(same[mask].mean()),
        "label_agreement_all": float(same.mean()),
        "seconds_ours": round(s_ours, 2),
        "seconds_monai": round(s_monai, 2),
        "cpu_seconds_ours": round(cpu_ours, 2),
        "cpu_seconds_monai": round(cpu_monai, 2),
        **breakdown,
        "windows_total": len(grid),
        "windows_run_ours": run,
        "body_fraction": round(float(mask.mean()), 4),
        "volume_shape_zyx": list(shape),
        "fov_mm": args.fov_mm,
        "windows_run_fraction_by_fov_mm": fov_table,
        "window": list(window),
        "overlap": args.overlap,
        "sw_batch_size": args.sw_batch_size,
        "network": {"name": "unet3d", "width": args.width, "depth": args.depth, "num_classes": NUM_CLASSES, "weights": "random, seed 0"},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "monai": monai.__version__,
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "amp": amp,
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in load_after],
        },
        "note": "wall and process-CPU seconds of one run each after a warm-up; other processes may share the CPU (see load averages)",
    }
    out = args.out or RESULTS / ("inference_quick.json" if args.quick else "inference.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")

    rows = [
        ("MONAI sliding_window_inference", s_monai, cpu_monai, len(grid)),
        ("dinomix predict_labels + body_mask", s_ours, cpu_ours, run),
    ]
    if args.breakdown:
        rows.append(("dinomix predict_labels, no skipping", s_all, cpu_all, len(grid)))
    print(f"volume {shape} (z, y, x), window {window}, overlap {args.overlap}, sw_batch_size {args.sw_batch_size}, "
          f"unet3d width {args.width} depth {args.depth}, {device}")
    print(f"{'run':40s} {'wall s':>8s} {'cpu s':>8s} {'windows':>8s}")
    for name, wall, cpu, n in rows:
        print(f"{name:40s} {wall:8.2f} {cpu:8.2f} {n:8d}")
    print(f"ratio ours/MONAI: {result['ratio_vs_monai']:.3f} (wall), {result['ratio_vs_monai_cpu_time']:.3f} (cpu)")
    print(f"label agreement inside the body: {result['label_agreement']:.6f}, overall: {result['label_agreement_all']:.6f}")
    print(f"windows touching the body by field of view (mm): {fov_table}")
    print(f"load average before/after: {result['machine']['load_average_before']} / {result['machine']['load_average_after']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
