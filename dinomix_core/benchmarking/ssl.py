"""SSL methods on the imbalanced phantom: same data, budget and seeds for every method.

Supervised only, mean teacher, +PIC, +FKD and full DINO-Mix are trained on the same labeled
and unlabeled cases and scored on the same held-out cases; results are averaged over seeds.
With a random teacher the FKD rows measure the plumbing, not foundational knowledge, and the
result says so.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from dinomix_core.benchmarking.common import machine_info, write_json
from dinomix_core.data.phantom import write_phantom_dataset
from dinomix_core.engine.config import METHODS, TrainConfig
from dinomix_core.engine.evaluation import evaluate_folders
from dinomix_core.engine.pipeline import LoadedModel, predict_file, train_on_dataset


def run_ssl_benchmark(
    out_dir: str | Path,
    *,
    methods: Sequence[str] = METHODS,
    seeds: Sequence[int] = (0, 1, 2),
    labeled: int = 2,
    unlabeled: int = 8,
    test: int = 4,
    steps: int = 600,
    patch: tuple[int, int, int] = (16, 64, 64),
    width: int = 8,
    optimizer: str = "adamw",
    lr: float = 3e-3,
    depth: int = 3,
    teacher: str = "random",
    data_seed: int = 100,
    size: str = "small",
    tail_k: int = 3,
    callbacks_for: Callable[[str, int], Sequence] | None = None,
    device: str | None = None,
    result_json: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    out = Path(out_dir)
    data = out / "data"
    n_cases = labeled + unlabeled + test
    if not (data / "dataset.json").exists():
        write_phantom_dataset(data, n_cases, data_seed, size)
    ids = sorted(p.name[: -len(".nii.gz")] for p in (data / "labelsTr").glob("*.nii.gz"))
    test_ids = ids[-test:]
    gt_dir = out / "test_labels"
    gt_dir.mkdir(parents=True, exist_ok=True)
    for cid in test_ids:
        (gt_dir / f"{cid}.nii.gz").write_bytes((data / "labelsTr" / f"{cid}.nii.gz").read_bytes())

    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runs: dict[str, list[dict]] = {}
    for seed in seeds:  # seed-major: a cut-short benchmark still compares every method
        for method in methods:
            cfg = TrainConfig(method=method, student="unet3d", student_width=width, student_depth=depth,
                              patch_size=patch, steps=steps, seed=seed, checkpoint_every=0, optimizer=optimizer, lr=lr)
            run_dir = out / "runs" / f"{method}-seed{seed}"
            tic = time.perf_counter()
            result = train_on_dataset(
                cfg, data, labeled, run_dir, exclude=test_ids, teacher_weights=teacher,
                callbacks=list(callbacks_for(method, seed)) if callbacks_for else [], cache_dir=out / "token_cache",
            )
            seconds = time.perf_counter() - tic
            model = LoadedModel(result.model_path, device=dev)
            pred_dir = run_dir / "predictions"
            for cid in test_ids:
                predict_file(model, data / "imagesTr" / f"{cid}_0000.nii.gz", pred_dir / f"{cid}.nii.gz")
            report = evaluate_folders(pred_dir, gt_dir, model.labelmap, tail_k=tail_k)
            runs.setdefault(method, []).append({"seed": seed, "seconds": round(seconds, 1), **report})
            if log is not None:
                log(f"{method} seed {seed}: mean Dice {report['mean_dice']:.1f}%, tail Dice "
                    f"{report['tail_dice'] or 0.0:.1f}% ({seconds:.0f} s)")
            doc = _document(runs, teacher, labeled, unlabeled, test, steps, patch, optimizer, lr, width, depth,
                            seeds, data_seed, size, tail_k, dev)
            if result_json:
                write_json(result_json, doc)  # after every run, so an interrupted benchmark keeps its results
    return doc


def _document(runs, teacher, labeled, unlabeled, test, steps, patch, optimizer, lr, width, depth, seeds, data_seed,
              size, tail_k, dev) -> dict:
    summary = {m: _average(rs) for m, rs in runs.items()}
    random_teacher = teacher == "random"
    return {
        "benchmark": "ssl_phantom",
        "protocol": {
            "labeled": labeled, "unlabeled": unlabeled, "test": test, "steps": steps, "patch": list(patch),
            "optimizer": optimizer, "lr": lr,
            "student": f"unet3d width {width} depth {depth}", "seeds": list(seeds), "data_seed": data_seed,
            "phantom_size": size, "tail_k": tail_k,
        },
        "teacher": "RANDOM TEACHER (no DINOv3 weights): FKD rows test the mechanism, not foundational knowledge"
        if random_teacher else teacher,
        "machine": machine_info(dev),
        "methods": summary,
        "runs": runs,
    }


def _average(reports: list[dict]) -> dict:
    def mean(values):
        vals = [v for v in values if v is not None]
        return None if not vals else float(np.mean(vals))

    classes = list(reports[0]["per_class"].keys())
    per_class = {
        name: {
            "dice": mean([r["per_class"][name].get("dice") for r in reports]),
            "hd95_mm": mean([r["per_class"][name].get("hd95_mm") for r in reports]),
        }
        for name in classes
    }
    return {
        "mean_dice": mean([r["mean_dice"] for r in reports]),
        "mean_dice_std": float(np.std([r["mean_dice"] for r in reports])) if len(reports) > 1 else 0.0,
        "tail_dice": mean([r["tail_dice"] for r in reports]),
        "tail_dice_std": float(np.std([r["tail_dice"] for r in reports if r["tail_dice"] is not None] or [0.0])),
        "tail_classes": reports[0].get("tail_classes"),
        "mean_hd95_mm": mean([r.get("mean_hd95_mm") for r in reports]),
        "per_class": per_class,
        "seconds_per_run": mean([r["seconds"] for r in reports]),
    }
