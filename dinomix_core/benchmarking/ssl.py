"""SSL methods on the imbalanced phantom: same data, budget and seeds for every method.

Supervised only, mean teacher, +PIC, +FKD and full DINO-Mix are trained on the same labeled
and unlabeled cases and scored on the same held-out cases; results are averaged over seeds.
With a random teacher the FKD rows measure the plumbing, not foundational knowledge, and the
result says so.

Runs are independent, so ``jobs > 1`` trains several at once in spawned processes (on one GPU
this hides the per-step Python and augmentation overhead of small networks). With a
``time_budget_s`` the step count is not guessed: a short probe of every run, at the same
concurrency, measures the slowest method's step time and the fixed cost of a run, and the
largest step count (a multiple of 50) that fits the budget is used for every method alike.

A full table takes hours on a CPU; with ``resume`` a run whose ``run.json`` records the same
training config and all its steps is not trained again: its model (and any predictions
already written) are reused and re-scored, so an interrupted benchmark continues where it
stopped and adding seeds costs only the new runs.
"""

from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from dinomix_core.benchmarking.common import machine_info, write_json
from dinomix_core.data.phantom import write_phantom_dataset
from dinomix_core.engine.config import METHODS, TrainConfig
from dinomix_core.engine.evaluation import evaluate_folders
from dinomix_core.engine.events import StepEvent
from dinomix_core.engine.pipeline import LoadedModel, predict_file, train_on_dataset
from dinomix_core.engine.postprocess import RULE, CleanUpPlan, decide as decide_postprocessing
from dinomix_core.io import read_labels, read_volume, write_labels


_PROBE_MARGIN = 2.0


@dataclass(frozen=True)
class RunSpec:
    """One (method, seed) training run of the benchmark; picklable for worker processes."""

    method: str
    seed: int
    steps: int
    out: str
    labeled: int
    test_ids: tuple[str, ...]
    patch: tuple[int, int, int]
    width: int
    depth: int
    optimizer: str
    lr: float
    teacher: str
    tail_k: int
    device: str
    threads: int = 0
    tag: str = "runs"
    overrides: tuple[tuple[str, object], ...] = ()  # extra TrainConfig fields, for ablations
    resume: bool = False  # reuse a finished run with the same config instead of training it again


def run_one(spec: RunSpec, callbacks: Sequence = ()) -> dict:
    """Train one method for one seed, predict the held-out cases and score them."""
    if spec.threads:
        torch.set_num_threads(spec.threads)
    out = Path(spec.out)
    data = out / "data"
    cfg = TrainConfig(method=spec.method, student="unet3d", student_width=spec.width, student_depth=spec.depth,
                      patch_size=spec.patch, steps=spec.steps, seed=spec.seed, checkpoint_every=0,
                      optimizer=spec.optimizer, lr=spec.lr, **dict(spec.overrides))
    run_dir = out / spec.tag / f"{spec.method}-seed{spec.seed}"
    step_seconds: list[float] = []

    def timing(event) -> None:
        if isinstance(event, StepEvent):
            step_seconds.append(event.seconds_per_step)

    tic = time.perf_counter()
    finished = _finished_run(run_dir, cfg, spec.teacher == "random") if spec.resume else None
    if finished is None:
        result = train_on_dataset(
            cfg, data, spec.labeled, run_dir, exclude=list(spec.test_ids), teacher_weights=spec.teacher,
            callbacks=[*callbacks, timing], cache_dir=out / "token_cache",
        )
        model_path, train_seconds = result.model_path, time.perf_counter() - tic
    else:
        model_path, train_seconds = run_dir / "model.pt", finished["seconds"]
        step_seconds.append(train_seconds / cfg.steps)  # run.json keeps no step times: the average
    # The raw network output is the table's main figure (comparable with runs before the
    # clean-up existed); the cleaned variants are scored from the same predictions.
    model = LoadedModel(model_path, device=torch.device(spec.device), postprocess="off")
    pred_dir = run_dir / "predictions"
    for cid in spec.test_ids:
        target = pred_dir / f"{cid}.nii.gz"
        if finished is None or not target.exists():
            predict_file(model, data / "imagesTr" / f"{cid}_0000.nii.gz", target)
    report = evaluate_folders(pred_dir, out / "test_labels", model.labelmap, tail_k=spec.tail_k)
    cleaned = _score_clean_up(model, data, spec, run_dir, pred_dir, out / "test_labels")
    # The last recorded value averages the final 20 steps: a steady-state step time.
    per_step = step_seconds[-1] if step_seconds else float("nan")
    seconds = time.perf_counter() - tic if finished is None else train_seconds + (time.perf_counter() - tic)
    return {
        "method": spec.method, "seed": spec.seed, "seconds": round(seconds, 1),
        "train_seconds": round(train_seconds, 1), "seconds_per_step": per_step, "reused": finished is not None,
        **report, "postprocessing": cleaned,
    }


def _score_clean_up(model: LoadedModel, data: Path, spec: RunSpec, run_dir: Path, pred_dir: Path, gt_dir: Path) -> dict:
    """Test scores with the mask clean-up: the model's own decision (``auto``) and every organ (``largest``).

    A model trained before the trainer decided the clean-up, or decided it by an older rule,
    is decided now, the way the trainer does without validation cases: on its labeled
    training cases; re-scored runs then measure the product's current clean-up.
    """
    decision = model.postprocessing
    if decision.decided_on is None or decision.rule != RULE:
        ids = sorted(p.name[: -len(".nii.gz")] for p in (data / "labelsTr").glob("*.nii.gz"))
        labeled = [cid for cid in ids if cid not in set(spec.test_ids)][: spec.labeled]
        preds, gts, spacings = [], [], []
        for cid in labeled:
            image = read_volume(data / "imagesTr" / f"{cid}_0000.nii.gz")
            preds.append(model.predict(image).array)
            gts.append(read_labels(data / "labelsTr" / f"{cid}.nii.gz", reference=image).array)
            spacings.append(image.spacing_zyx)
        decision = decide_postprocessing(preds, gts, spacings, model.labelmap.num_classes,
                                         decided_on="labeled training cases", names=dict(enumerate(model.labelmap.names)))
    modes = {"auto": CleanUpPlan(decision.keep_largest, decision.keep_large),
             "largest": CleanUpPlan(largest=tuple(range(1, model.labelmap.num_classes)))}
    scores = {"decision": decision.to_dict()}
    for mode, plan in modes.items():
        folder = run_dir / f"predictions_{mode}"
        for cid in spec.test_ids:
            raw = read_labels(pred_dir / f"{cid}.nii.gz")
            write_labels(raw.with_array(plan.apply(raw.array.copy())), folder / f"{cid}.nii.gz",
                         reference=raw)
        scores[mode] = evaluate_folders(folder, gt_dir, model.labelmap, tail_k=spec.tail_k)
    return scores


def _finished_run(run_dir: Path, cfg: TrainConfig, random_teacher: bool) -> dict | None:
    """``run.json`` of a completed run trained with exactly ``cfg`` (and the same kind of teacher), or None."""
    try:
        doc = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return None
    # Through from_dict: a run saved before a config field existed counts with its default.
    try:
        recorded = TrainConfig.from_dict(doc.get("config") or {}).to_dict()
    except (TypeError, ValueError):
        return None
    same_teacher = not cfg.use_fkd or bool((doc.get("teacher") or {}).get("is_random")) == random_teacher
    if recorded != cfg.to_dict() or doc.get("steps") != cfg.steps or not same_teacher:
        return None
    return doc if (run_dir / "model.pt").exists() else None


def run_ssl_benchmark(
    out_dir: str | Path,
    *,
    methods: Sequence[str] = METHODS,
    seeds: Sequence[int] = (0, 1, 2),
    labeled: int = 2,
    unlabeled: int = 8,
    test: int = 4,
    steps: int = 1650,
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
    jobs: int = 1,
    time_budget_s: float | None = None,
    probe_steps: int = 30,
    min_steps: int = 50,
    max_steps: int = 20_000,
    overrides: dict | None = None,
    resume: bool = False,
) -> dict:
    """Train and score every (method, seed); ``steps`` is ignored when ``time_budget_s`` is set."""
    out = Path(out_dir)
    data = out / "data"
    n_cases = labeled + unlabeled + test
    if not (data / "dataset.json").exists():
        write_phantom_dataset(data, n_cases, data_seed, size)
    ids = sorted(p.name[: -len(".nii.gz")] for p in (data / "labelsTr").glob("*.nii.gz"))
    test_ids = tuple(ids[-test:])
    gt_dir = out / "test_labels"
    gt_dir.mkdir(parents=True, exist_ok=True)
    for cid in test_ids:
        (gt_dir / f"{cid}.nii.gz").write_bytes((data / "labelsTr" / f"{cid}.nii.gz").read_bytes())

    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    jobs = max(1, int(jobs))
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else 0
    say = log or (lambda line: None)

    def specs(n_steps: int, tag: str) -> list[RunSpec]:
        # seed-major: a cut-short sequential benchmark still compares every method
        return [RunSpec(method, seed, n_steps, str(out), labeled, test_ids, tuple(patch), width, depth, optimizer, lr,
                        teacher, tail_k, str(dev), threads, tag, tuple(sorted((overrides or {}).items())),
                        resume and tag == "runs")
                for seed in seeds for method in methods]

    if jobs > 1 and any(TrainConfig(method=m).use_fkd for m in methods):
        _warm_token_cache(out, test_ids, teacher, dev)  # once, before workers race to fill it

    probe = None
    if time_budget_s is not None:
        tic = time.perf_counter()
        probe_runs = _execute(specs(probe_steps, "probe"), jobs, callbacks_for, None)
        probe_wall = time.perf_counter() - tic
        steps, probe = _steps_for_budget(probe_runs, probe_wall, time_budget_s, probe_steps, jobs, min_steps, max_steps)
        say(f"probe: slowest step {probe['slowest_seconds_per_step']:.3f} s ({probe['slowest_method']}), "
            f"fixed cost {probe['fixed_seconds_per_run']:.0f} s per run -> {steps} steps for a {time_budget_s:.0f} s budget")

    runs: dict[str, list[dict]] = {}

    def record(run: dict) -> None:
        runs.setdefault(run["method"], []).append(run)
        say(f"{run['method']} seed {run['seed']}: mean Dice {run['mean_dice']:.1f}%, tail Dice "
            f"{run['tail_dice'] or 0.0:.1f}% ({run['seconds']:.0f} s)")
        if result_json:  # after every run, so an interrupted benchmark keeps its results
            write_json(result_json, doc_now())

    def doc_now() -> dict:
        return _document(runs, teacher, labeled, unlabeled, test, steps, patch, optimizer, lr, width, depth,
                         seeds, data_seed, size, tail_k, dev, jobs, probe, overrides)

    _execute(specs(steps, "runs"), jobs, callbacks_for, record)
    return doc_now()


def _execute(run_specs: list[RunSpec], jobs: int, callbacks_for, on_done) -> list[dict]:
    results = []
    if jobs == 1:
        for spec in run_specs:
            run = run_one(spec, list(callbacks_for(spec.method, spec.seed)) if callbacks_for else [])
            results.append(run)
            if on_done:
                on_done(run)
        return results
    # spawn, not fork: CUDA cannot be re-initialised in a forked child
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_one, spec) for spec in run_specs]
        for future in as_completed(futures):
            run = future.result()
            results.append(run)
            if on_done:
                on_done(run)
    return results


def _steps_for_budget(probe_runs, probe_wall, budget_s, probe_steps, jobs, min_steps, max_steps) -> tuple[int, dict]:
    """The largest multiple of 50 steps whose slowest run, waves of ``jobs`` at a time, fits.

    The fixed cost per wave (process start, data loading, prediction and scoring) is what the
    probe's wall time leaves after its steps. The probe's step time is scaled by
    ``_PROBE_MARGIN``: its processes start one after another and overlap less than the real
    runs do (on an H200 with 15 runs the real steps took 1.7x the probe's and more: runs of
    the two slowest methods had not finished when the budget ran out)."""
    slowest = max(probe_runs, key=lambda r: r["seconds_per_step"])
    measured = float(slowest["seconds_per_step"])
    per_step = measured * _PROBE_MARGIN
    waves = math.ceil(len(probe_runs) / jobs)
    fixed = max(0.0, probe_wall / waves - probe_steps * measured)
    steps = int(((budget_s / waves - fixed) / per_step) // 50 * 50)
    steps = max(int(min_steps), min(int(max_steps), steps))
    return steps, {
        "budget_seconds": budget_s, "probe_steps": probe_steps, "slowest_method": slowest["method"],
        "slowest_seconds_per_step": measured, "planned_seconds_per_step": per_step, "margin": _PROBE_MARGIN,
        "fixed_seconds_per_run": fixed, "waves": waves,
        "probe_wall_seconds": probe_wall,
        "seconds_per_step": {r["method"]: r["seconds_per_step"] for r in probe_runs},
    }


def _warm_token_cache(out: Path, test_ids, teacher: str, dev: torch.device) -> None:
    from dinomix_core.data.dataset import load_cases, load_nnunet_dataset
    from dinomix_core.data.token_cache import TokenCache
    from dinomix_core.engine.pipeline import make_teacher

    cfg = TrainConfig(method="dinomix")
    model = make_teacher(cfg, teacher, dev)
    cases, labelmap, _ = load_nnunet_dataset(out / "data", allow_unlabeled=True)
    specs = [c for c in cases if c.case_id not in set(test_ids)]
    load_cases(specs, labelmap=labelmap, teacher=model, cache=TokenCache(out / "token_cache"),
               window=tuple(cfg.teacher_window), stride=cfg.token_stride, clip=cfg.intensity_window)
    del model
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def _document(runs, teacher, labeled, unlabeled, test, steps, patch, optimizer, lr, width, depth, seeds, data_seed,
              size, tail_k, dev, jobs=1, probe=None, overrides=None) -> dict:
    summary = {m: average_runs(rs) for m, rs in runs.items()}
    random_teacher = teacher == "random"
    protocol = {
        "labeled": labeled, "unlabeled": unlabeled, "test": test, "steps": steps, "patch": list(patch),
        "optimizer": optimizer, "lr": lr,
        "student": f"unet3d width {width} depth {depth}", "seeds": list(seeds), "data_seed": data_seed,
        "phantom_size": size, "tail_k": tail_k, "parallel_runs": jobs,
    }
    if overrides:
        protocol["config_overrides"] = dict(overrides)
    if probe is not None:
        protocol["steps_from_time_budget"] = probe
    return {
        "benchmark": "ssl_phantom",
        "protocol": protocol,
        "teacher": "RANDOM TEACHER (no DINOv3 weights): FKD rows test the mechanism, not foundational knowledge"
        if random_teacher else teacher,
        "machine": machine_info(dev),
        "methods": summary,
        "runs": runs,
    }


def average_runs(reports: list[dict]) -> dict:
    """One method's row over its runs (seeds): mean scores, spread, and the clean-up scores
    when every run has them."""
    summary = _summary(reports)
    cleaned = [r.get("postprocessing") for r in reports]
    if all(cleaned):
        summary["postprocessing"] = {mode: _summary([c[mode] for c in cleaned]) for mode in ("auto", "largest")}
        summary["postprocessing"]["kept_largest"] = [c["decision"]["keep_largest"] for c in cleaned]
        summary["postprocessing"]["kept_large_pieces"] = [c["decision"].get("keep_large", []) for c in cleaned]
    summary["seconds_per_run"] = float(np.mean([r["seconds"] for r in reports]))
    return summary


def _summary(reports: list[dict]) -> dict:
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
    }
