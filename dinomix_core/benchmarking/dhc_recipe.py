"""The DHC protocol (METHOD.md) on Synapse or AMOS, so users with the data can reproduce the table.

Intensity clip [-75, 275] HU → [0, 1] (the student's default preprocessing); Synapse in-plane
down-sampled x2; crops 64x128x128; SGD lr 0.03, momentum 0.9, Nesterov, wd 3e-5, poly decay;
batch 2 labeled + 2 unlabeled; sliding-window evaluation at the crop size; Dice and ASD per
class averaged over test cases, then over classes. Cases are matched to the split files' ids
exactly or by numeric tail (``0002`` ↔ ``img0002``).
"""

from __future__ import annotations

import time
from pathlib import Path

from dinomix_core.benchmarking.common import machine_info, write_json
from dinomix_core.data.dataset import CaseSpec, load_nnunet_dataset, select_labeled
from dinomix_core.engine.config import TrainConfig
from dinomix_core.engine.evaluation import evaluate_folders
from dinomix_core.engine.pipeline import LoadedModel, predict_file, train_on_dataset
from dinomix_core.io import read_labels, read_volume, resample_to_spacing, write_dataset_json, write_image, write_labels
from dinomix_core.io.errors import DinomixInputError

PUBLISHED = {
    "synapse": {"split": "labeled_20p", "fully_supervised": 62.09, "DHC": 48.61, "GenericSSL": 60.88, "DINO-Mix (paper)": 66.45},
    "amos": {"split": "labeled_5p", "fully_supervised": 76.50, "DHC": 49.53, "DINO-Mix (paper)": 62.73},
}
DEFAULTS = {"synapse": dict(labeled="labeled_20p.txt", downsample=2), "amos": dict(labeled="labeled_5p.txt", downsample=1)}


def run_dhc_recipe(
    benchmark: str,
    data_dir: str | Path,
    split_dir: str | Path,
    out_dir: str | Path,
    *,
    labeled_file: str | None = None,
    method: str = "dinomix",
    steps: int = 30_000,
    patch: tuple[int, int, int] = (64, 128, 128),
    width: int = 16,
    depth: int = 4,
    inplane_downsample: int | None = None,
    teacher: str | None = None,
    seed: int = 0,
    callbacks=(),
    result_json: str | Path | None = None,
) -> dict:
    if benchmark not in DEFAULTS:
        raise ValueError(f"benchmark must be one of {sorted(DEFAULTS)}")
    split_dir = Path(split_dir)
    labeled_file = labeled_file or DEFAULTS[benchmark]["labeled"]
    factor = DEFAULTS[benchmark]["downsample"] if inplane_downsample is None else int(inplane_downsample)
    for name in (labeled_file, "test.txt"):
        if not (split_dir / name).is_file():
            raise DinomixInputError(split_dir / name, "split file not found.",
                                    "point --split at a DHC split folder (labeled_*.txt, unlabeled_*.txt, test.txt, eval.txt).")
    cases, labelmap, _ = load_nnunet_dataset(data_dir)
    test = select_labeled(cases, split_dir / "test.txt")[0]
    evals = select_labeled(cases, split_dir / "eval.txt")[0] if (split_dir / "eval.txt").is_file() else []
    out = Path(out_dir)
    pre = out / "preprocessed"
    _preprocess(cases, labelmap, pre, factor)
    held_out = [c.case_id for c in (*test, *evals)]
    cfg = TrainConfig(method=method, student="unet3d", student_width=width, student_depth=depth, patch_size=patch,
                      steps=steps, seed=seed, lr=0.03, momentum=0.9, weight_decay=3e-5, batch_labeled=2, batch_unlabeled=2)
    tic = time.perf_counter()
    result = train_on_dataset(cfg, pre, split_dir / labeled_file, out / "run", exclude=held_out,
                              teacher_weights=teacher, callbacks=callbacks, cache_dir=out / "token_cache")
    model = LoadedModel(result.model_path)
    pred_dir, gt_dir = out / "test_predictions", out / "test_labels"
    gt_dir.mkdir(parents=True, exist_ok=True)
    for case in test:
        predict_file(model, pre / "imagesTr" / f"{case.case_id}_0000.nii.gz", pred_dir / f"{case.case_id}.nii.gz")
        (gt_dir / f"{case.case_id}.nii.gz").write_bytes((pre / "labelsTr" / f"{case.case_id}.nii.gz").read_bytes())
    report = evaluate_folders(pred_dir, gt_dir, labelmap)
    doc = {
        "benchmark": benchmark,
        "protocol": {"labeled_file": labeled_file, "inplane_downsample": factor, "patch": list(patch), "steps": steps,
                     "method": method, "test_cases": [c.case_id for c in test]},
        "teacher": model.teacher_note,
        "seconds": round(time.perf_counter() - tic, 1),
        "published_mean_dice": PUBLISHED[benchmark],
        "machine": machine_info(),
        **report,
    }
    if result_json:
        write_json(result_json, doc)
    return doc


def _preprocess(cases: list[CaseSpec], labelmap, out: Path, factor: int) -> None:
    """Resample every case in-plane by ``factor`` (image linear, labels nearest) into an nnU-Net folder."""
    if (out / "dataset.json").exists():
        return
    for case in cases:
        image = read_volume(case.image_path)
        label = read_labels(case.label_path, reference=image, labelmap=labelmap)
        if factor != 1:
            sz, sy, sx = image.spacing_zyx
            target = (sz, sy * factor, sx * factor)
            image = resample_to_spacing(image, target, is_label=False)
            label = resample_to_spacing(label, target, is_label=True)
        write_image(image, out / "imagesTr" / f"{case.case_id}_0000.nii.gz")
        write_labels(label, out / "labelsTr" / f"{case.case_id}.nii.gz", reference=image)
    write_dataset_json(out / "dataset.json", labelmap.to_dataset_json_dict(num_training=len(cases)))
