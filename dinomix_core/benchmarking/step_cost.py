"""Cost of a DINO-Mix training step relative to a mean-teacher step, token cache on and off.

All three trainers share data, student, patch and batch sizes; only the method (and where the
teacher tokens come from) differs. Steps are timed after warm-up; CUDA is synchronised.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from dinomix_core.benchmarking.common import machine_info, write_json
from dinomix_core.data.dataset import CaseSpec, load_cases, load_nnunet_dataset
from dinomix_core.data.phantom import write_phantom_dataset
from dinomix_core.data.token_cache import TokenCache
from dinomix_core.engine.config import TrainConfig
from dinomix_core.engine.distributed import DistContext
from dinomix_core.engine.trainer import TeacherInfo, Trainer
from dinomix_core.models.teacher import build_teacher


def run_step_cost(
    out_dir: str | Path,
    *,
    steps: int = 10,
    warmup: int = 3,
    patch: tuple[int, int, int] = (32, 64, 64),
    width: int = 16,
    depth: int = 3,
    teacher_arch: str = "vit_small_patch16_dinov3",
    teacher_weights: str = "random",
    teacher_overrides: dict | None = None,
    size: str = "small",
    device: str | None = None,
    result_json: str | Path | None = None,
    profile_path: str | Path | None = None,
) -> dict:
    """Median step times of mean teacher and DINO-Mix (token cache on, off) on identical data.

    ``profile_path``: also write a torch.profiler table (CPU and, on CUDA, GPU time per
    operator) of a few extra steps of each trainer, to see where a DINO-Mix step spends the
    time a mean-teacher step does not."""
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(out_dir)
    data = out / "data"
    if not (data / "dataset.json").exists():
        write_phantom_dataset(data, 4, 7, size)
    cases, labelmap, _ = load_nnunet_dataset(data)
    teacher = build_teacher(teacher_arch, weights=teacher_weights, **(teacher_overrides or {})).to(dev)
    cache = TokenCache(out / "token_cache")
    base = dict(student="unet3d", student_width=width, student_depth=depth, patch_size=patch, steps=10_000,
                checkpoint_every=0, seed=0)
    lab_specs = cases[:2]
    unl_specs = [CaseSpec(c.case_id, c.image_path, None) for c in cases[2:]]

    def trainer(method: str, token_source: str) -> Trainer:
        cfg = TrainConfig(method=method, token_source=token_source, **base)
        cached = cfg.use_fkd and token_source == "cache"
        kwargs = dict(labelmap=labelmap, teacher=teacher if cached else None, cache=cache, stride=cfg.token_stride)
        info = TeacherInfo(teacher.teacher_id, teacher.is_random, teacher.embed_dim) if cfg.use_fkd else TeacherInfo()
        return Trainer(cfg, load_cases(lab_specs, **kwargs), load_cases(unl_specs, **kwargs), labelmap,
                       out_dir=out / f"run-{method}-{token_source}", teacher=info,
                       online_teacher=teacher if (cfg.use_fkd and not cached) else None,
                       dist=DistContext(device=dev))

    def time_steps(tr: Trainer) -> list[float]:
        times = []
        for step in range(warmup + steps):
            _sync(dev)
            tic = time.perf_counter()
            tr.train_step(step)
            _sync(dev)
            if step >= warmup:
                times.append(time.perf_counter() - tic)
        return times

    trainers = {
        "mean_teacher": trainer("mean-teacher", "cache"),
        "dinomix_cache_on": trainer("dinomix", "cache"),
        "dinomix_cache_off": trainer("dinomix", "online"),
    }
    timings = {}
    for name, tr in trainers.items():
        timings[name] = time_steps(tr)
        tr.batches.close()
    if profile_path is not None:
        tables = [_profile(trainers[name], warmup + steps, dev, name) for name in ("mean_teacher", "dinomix_cache_on")]
        Path(profile_path).write_text("\n\n".join(tables))
    med = {k: statistics.median(v) for k, v in timings.items()}
    doc = {
        "benchmark": "step_cost",
        "ratio_cache_on": med["dinomix_cache_on"] / med["mean_teacher"],
        "ratio_cache_off": med["dinomix_cache_off"] / med["mean_teacher"],
        "median_step_seconds": med,
        "step_seconds": timings,
        "protocol": {"steps": steps, "warmup": warmup, "patch": list(patch), "batch": "2 labeled + 2 unlabeled",
                     "student": f"unet3d width {width} depth {depth}", "teacher": teacher.teacher_id,
                     "token_stride": TrainConfig().token_stride},
        "target": "ratio_cache_on <= 1.15",
        "machine": machine_info(dev),
    }
    if result_json:
        write_json(result_json, doc)
    return doc


def _profile(tr: Trainer, first_step: int, dev: torch.device, name: str, steps: int = 3) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for step in range(first_step, first_step + steps):
            tr.train_step(step)
        _sync(dev)
    tr.batches.close()
    sort = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=40, max_name_column_width=60)
    self_cpu = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60)
    return f"== {name}: {steps} steps, sorted by {sort}\n{table}\n== {name}: by self CPU time\n{self_cpu}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
