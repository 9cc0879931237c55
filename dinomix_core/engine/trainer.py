"""The training loop: composes student, objective and batches; emits events; honours cancel.

No Qt here: a GUI runs ``Trainer.fit`` on a worker thread and turns events into signals.
Every step is a pure function of (seed, rank, step) and the saved state, so a run resumed from
``last.pt`` continues with the same loss curve.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from dinomix_core.data.batches import TrainBatches
from dinomix_core.data.patches import PatchSampler
from dinomix_core.engine.checkpoint import MODEL_KIND, STATE_KIND, load_checkpoint, save_checkpoint
from dinomix_core.engine.config import TrainConfig
from dinomix_core.engine.distributed import DistContext, backend_name
from dinomix_core.engine.events import (
    CancelToken,
    CheckpointEvent,
    StageEvent,
    StepEvent,
    TrainingCancelled,
    ValidationEvent,
    emit_all,
)
from dinomix_core.engine.metrics import evaluate_arrays
from dinomix_core.engine.model_record import TeacherInfo, _run_spacing, model_meta, teacher_note
from dinomix_core.engine.postprocess import PostProcessing, decide as decide_postprocessing
from dinomix_core.engine.inference_settings import inference_settings
from dinomix_core.engine.inferer import InferenceCancelled, predict_labels
from dinomix_core.engine.objective import Objective, StudentWithHead
from dinomix_core.engine.schedules import learning_rate
from dinomix_core.io import LabelMap
from dinomix_core.io.atomic import atomic_write_text
from dinomix_core.models import create_student

IMAGENET_MEAN = (0.485, 0.456, 0.406)
BUDGET_PROBE_STEPS = 10  # steps timed before a time budget fixes the step count
BUDGET_MAX_STEPS = 10**9  # loop bound while the budget may still change the count
POSTPROCESS_MAX_CASES = 4  # labeled cases predicted to decide the mask clean-up when there is no validation
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TrainResult:
    model_path: Path
    state_path: Path
    run_json: Path
    steps_done: int
    history: list[dict] = field(default_factory=list)
    validation: dict | None = None


class Trainer:
    """Trains one student with the configured parts of DINO-Mix.

    ``labeled``/``unlabeled``/``val_cases``: ``dinomix_core.data.LoadedCase`` lists (arrays in
    (z, y, x)); FKD needs their ``tokens`` (cache) unless ``online_teacher`` is given.
    ``val_held_out``: whether ``val_cases`` are kept out of training (False: they are training
    cases, reported as such in every ``ValidationEvent``). ``announce_done``: emit the
    ``"done"`` stage when ``fit`` ends (a job that does more afterwards announces it itself).
    Files written to ``out_dir``: ``model.pt`` (inference), ``last.pt`` (resume state),
    ``run.json`` (config, teacher, loss history, validation).

    ``cancel`` is checked before every step and every validation window batch; a cancelled
    ``fit`` saves ``last.pt`` at the steps done and raises ``TrainingCancelled``.

    ``target_spacing`` (z, y, x mm): the grid the cases were resampled to (``load_cases``),
    recorded in ``model.pt`` so inference resamples its input to it; by default the labeled
    cases' common spacing (none is recorded when they differ).
    """

    def __init__(
        self,
        config: TrainConfig,
        labeled: Sequence,
        unlabeled: Sequence,
        labelmap: LabelMap,
        *,
        out_dir: str | Path,
        teacher: TeacherInfo | None = None,
        online_teacher=None,
        val_cases: Sequence = (),
        callbacks: Sequence = (),
        cancel: CancelToken | None = None,
        dist: DistContext | None = None,
        val_held_out: bool = True,
        announce_done: bool = True,
        target_spacing: Sequence[float] | None = None,
    ):
        self.cfg = config
        self.labelmap = labelmap
        self.target_spacing = _run_spacing(target_spacing, labeled)
        self.out_dir = Path(out_dir)
        self.teacher = teacher or TeacherInfo()
        self.online_teacher = online_teacher
        self.labeled = list(labeled)  # also predicted to decide the mask clean-up when there is no validation
        self.val_cases = list(val_cases)
        self.val_held_out = bool(val_held_out)
        self.announce_done = bool(announce_done)
        self.callbacks = list(callbacks)
        self.cancel = cancel or CancelToken()
        self.dist = dist or DistContext(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        self.device = self.dist.device
        if config.use_fkd and self.teacher.embed_dim is None:
            raise ValueError("FKD needs a teacher: pass TeacherInfo with embed_dim (and cached tokens or online_teacher)")
        if config.time_budget_s > 0 and self.dist.world_size > 1:
            raise ValueError("a time budget needs a single process (each rank would fix its own step count); "
                             "give --steps under torchrun")
        self._budget_fixed = False
        if config.use_mean_teacher and not unlabeled:
            raise ValueError(f"method {config.method!r} needs unlabeled cases; none were given")

        torch.manual_seed(config.seed)
        num_classes = labelmap.num_classes
        self.student = create_student(
            config.student, num_classes=num_classes, in_channels=1,
            width=config.student_width, depth=config.student_depth, norm=config.student_norm,
        ).to(self.device)
        self.objective = Objective(
            config, self.student, num_classes, self.teacher.embed_dim, reduce=self.dist.all_reduce_sum,
            gather=self.dist.all_gather_rows,
        )
        self.objective.init_frequencies([c.label for c in labeled])
        self.objective.to(self.device)
        self.model = StudentWithHead(self.student, self.objective.head).to(self.device)
        self._channels_last = channels_last_training(self.device, self.student)
        if self._channels_last:
            self.model.to(memory_format=torch.channels_last_3d)
            if self.objective.ema is not None:
                self.objective.ema.to(memory_format=torch.channels_last_3d)
        self.ddp_model = (
            DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.dist.enabled
            else self.model
        )
        if config.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(
                self.model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay
            )
        use_tokens = config.use_fkd and config.token_source == "cache"
        on_gpu = self.device.type == "cuda"
        if on_gpu:
            torch.backends.cudnn.benchmark = True  # fixed patch size: autotuned 3D convolutions pay off
        self.batches = TrainBatches(
            list(labeled),
            list(unlabeled) if config.uses_unlabeled else [],
            PatchSampler(config.patch_size, fg_fraction=config.fg_fraction, stride=config.token_stride,
                         class_weights=config.patch_class_weighting),
            batch_labeled=config.batch_labeled,
            batch_unlabeled=config.batch_unlabeled if config.uses_unlabeled else 0,
            seed=config.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            augment=config.augment,
            # No left-right mirroring: it would swap the left/right kidney and adrenal classes.
            augment_kwargs={"flips": ("z", "y")},
            # On a GPU the crops are augmented there, two steps ahead on a background thread, so
            # the step does not wait for the CPU; on a CPU a second thread would only compete.
            device=self.device if on_gpu else "cpu",
            prefetch=(2 if on_gpu else 0) if config.prefetch is None else config.prefetch,
        )
        if not use_tokens:
            for case in (*self.batches.labeled_cases, *self.batches.unlabeled_cases):
                if case.tokens is not None:
                    raise ValueError("cases carry teacher tokens but this configuration does not use them; load them without a teacher")
        self.history: list[dict] = []
        self.start_step = 0
        self.validation: dict | None = None
        self._val_predictions: tuple | None = None  # (preds, gts, spacings) of the last validation
        self.postprocessing = PostProcessing()

    # ---- public ----------------------------------------------------------------------------
    def fit(self, *, resume: bool = False) -> TrainResult:
        cfg = self.cfg
        if resume:
            self._load_state(self.out_dir / "last.pt")
        self._emit(StageEvent("training", f"{cfg.method}: steps {self.start_step}..{cfg.steps}", self.start_step, cfg.steps))
        tic = time.perf_counter()
        step_times: list[float] = []
        step = self.start_step
        budget_open = cfg.time_budget_s > 0 and not self._budget_fixed  # a resumed run keeps the count it fixed
        try:
            for step in range(self.start_step, BUDGET_MAX_STEPS if cfg.time_budget_s > 0 else cfg.steps):
                if step >= cfg.steps:
                    break
                if self.cancel.cancelled:
                    self._save_state(step)
                    raise TrainingCancelled(f"cancelled at step {step}; resume with the same --out and --resume")
                t0 = time.perf_counter()
                parts = self.train_step(step)
                step_times.append(time.perf_counter() - t0)
                self.history.append({"step": step, **parts})
                recent = step_times[-20:]
                per_step = sum(recent) / len(recent)
                done = step + 1
                if budget_open and len(step_times) >= min(BUDGET_PROBE_STEPS, cfg.steps):
                    budget_open = False
                    self._fix_steps_for_budget(done, time.perf_counter() - tic, per_step)
                self._emit(StepEvent(step + 1, cfg.steps, parts, parts["lr"], per_step, per_step * (cfg.steps - step - 1)))
                if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
                    self._save_state(done)
                if cfg.val_every and self.val_cases and done % cfg.val_every == 0 and done < cfg.steps:
                    self._validate_or_stop(done)
                    self._emit(StageEvent("training", f"{cfg.method}: steps {done}..{cfg.steps}", done, cfg.steps))
        finally:
            self.batches.close()  # the prefetch thread, if any
        done = cfg.steps
        if self.val_cases:
            self._validate_or_stop(done)
        self._decide_postprocessing_or_stop(done)
        state_path = self._save_state(done)
        model_path = self.save_model(self.out_dir / "model.pt", done)
        run_json = self._write_run_json(done, time.perf_counter() - tic)
        if self.announce_done:
            self._emit(StageEvent("done", f"model saved to {model_path}", done, cfg.steps))
        return TrainResult(model_path, state_path, run_json, done, self.history, self.validation)

    def _validate_or_stop(self, step: int) -> None:
        """Validate; a cancel during it keeps the state at ``step`` (resumable) and stops the run."""
        try:
            self.validate(step)
        except InferenceCancelled:
            self._save_state(step)
            raise TrainingCancelled(f"cancelled while validating at step {step}; resume with --resume") from None

    def train_step(self, step: int) -> dict:
        cfg = self.cfg
        batch = _to_device(self._batch(step), self.device)
        if self._channels_last:
            batch = _images_channels_last(batch)
        if cfg.use_fkd and cfg.token_source == "online":
            for side in ("labeled", "unlabeled"):
                if batch.get(side) is not None:
                    batch[side]["tokens"] = online_tokens(self.online_teacher, batch[side]["image"], cfg.token_stride)
        t = step / max(cfg.steps, 1)
        lr = learning_rate(cfg.lr, t, cfg.lr_schedule, cfg.warmup_fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        generator = torch.Generator().manual_seed(_step_seed(cfg.seed, self.dist.rank, step))
        self.model.train()
        out = self.objective(self.ddp_model, batch, t, generator, self._autocast)
        if not torch.isfinite(out.loss):
            raise FloatingPointError(f"loss became {float(out.loss)} at step {step}; lower --lr or check the data")
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.optimizer.step()
        self.objective.after_step(self.student, step)
        return {**out.parts, "lr": lr}

    @torch.no_grad()
    def validate(self, step: int) -> dict:
        """Per-class Dice (%) of the student on the validation cases, by sliding window.

        Emits ``StageEvent("validating", case id, windows done, windows total)`` per window
        batch and then one ``ValidationEvent``; ``cancel`` raises ``InferenceCancelled``.
        """
        self.model.eval()
        preds, gts, spacings = [], [], []
        try:
            for case in self.val_cases:
                def progress(done, total, cid=case.case_id):
                    self._emit(StageEvent("validating", cid, done, total))

                preds.append(self.predict_array(case.image, progress=progress, cancel=self.cancel))
                gts.append(case.label)
                spacings.append(case.spacing_zyx)
        finally:
            self.model.train()
        self._val_predictions = (preds, gts, spacings)
        case_ids = [c.case_id for c in self.val_cases]
        report = evaluate_arrays(preds, gts, spacings, self.labelmap.num_classes, class_names=self.labelmap.names,
                                 case_ids=case_ids)
        self.validation = {"step": step, "held_out": self.val_held_out, **report}
        per_class = {name: v.get("dice") for name, v in report["per_class"].items()}
        self._emit(ValidationEvent(step, per_class, report.get("mean_dice"), report.get("tail_dice"),
                                   cases=tuple(case_ids), held_out=self.val_held_out))
        return self.validation

    def _decide_postprocessing_or_stop(self, step: int) -> None:
        """Decide the per-class mask clean-up (``engine/postprocess.py``) for ``model.pt``.

        On the last validation's predictions; without validation cases, on up to
        ``POSTPROCESS_MAX_CASES`` labeled cases predicted now (their labels were trained on,
        which the record says). A cancel here keeps the state at ``step``, like validation.
        """
        if self._val_predictions is not None:
            preds, gts, spacings = self._val_predictions
            where = "held-out validation cases" if self.val_held_out else "labeled training cases"
        else:
            cases = self.labeled[:POSTPROCESS_MAX_CASES]
            self.model.eval()
            try:
                preds = []
                for case in cases:
                    def progress(done, total, cid=case.case_id):
                        self._emit(StageEvent("post-processing", cid, done, total))

                    preds.append(self.predict_array(case.image, progress=progress, cancel=self.cancel))
            except InferenceCancelled:
                self._save_state(step)
                raise TrainingCancelled(f"cancelled while deciding the mask clean-up at step {step}; "
                                        "resume with --resume") from None
            finally:
                self.model.train()
            gts, spacings = [c.label for c in cases], [c.spacing_zyx for c in cases]
            where = "labeled training cases"
        names = dict(enumerate(self.labelmap.names))
        self.postprocessing = decide_postprocessing(preds, gts, spacings, self.labelmap.num_classes,
                                                    decided_on=where, names=names)
        self._val_predictions = None  # the volumes are not needed any more
        self._emit(StageEvent("post-processing", self.postprocessing.summary(names)))

    def predict_array(self, image: np.ndarray, *, progress=None, cancel=None) -> np.ndarray:
        """Labels (z, y, x) for a preprocessed [0, 1] image, sliding window at the patch size.

        With the product's inference settings (``engine/inference_settings.py``), so validation
        Dice and the mask clean-up decided from it match what ``dinomix predict`` will produce.
        """
        return predict_labels(
            self.student, image, window=self.cfg.patch_size, **inference_settings().options(),
            device=self.device, amp=self.cfg.amp, progress=progress, cancel=cancel,
        )

    def save_model(self, path: Path, step: int) -> Path:
        if not self.dist.is_main:
            return path
        meta = model_meta(self.cfg, self.student, self.labelmap, self.teacher, step, spacing_zyx=self.target_spacing,
                          postprocessing=self.postprocessing)
        save_checkpoint(path, kind=MODEL_KIND, meta=meta, tensors={"state_dict": _cpu_state(self.student)})
        return path

    # ---- internals -------------------------------------------------------------------------
    def _batch(self, step: int) -> dict:
        """The batch of ``step``: identical with or without prefetching, so resume stays exact."""
        if self.batches.step != step:
            self.batches.seek(step)
        batch = next(self.batches)
        assert batch["step"] == step
        return batch

    def _autocast(self):
        if self.cfg.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _emit(self, event) -> None:
        if self.dist.is_main:
            emit_all(self.callbacks, event)

    def _save_state(self, step: int) -> Path:
        path = self.out_dir / "last.pt"
        if self.dist.is_main:
            meta = {"step": step, "config": self.cfg.to_dict(), "history": self.history, "teacher": vars(self.teacher),
                    "budget_fixed": self._budget_fixed}
            tensors = {
                "model": _cpu_state(self.model),
                "optimizer": self.optimizer.state_dict(),
                "objective": self.objective.state_dict(),
            }
            save_checkpoint(path, kind=STATE_KIND, meta=meta, tensors=tensors)
            self._emit(CheckpointEvent(step, str(path)))
        self.dist.barrier()
        return path

    def _fix_steps_for_budget(self, done: int, elapsed: float, per_step: float) -> None:
        """Set the step count so the remaining steps fit ``time_budget_s`` (measured, not guessed).

        The learning-rate and curriculum schedules follow the new count from here on; the
        probe's steps ran at almost the initial rate either way.
        """
        cfg = self.cfg
        self._budget_fixed = True
        left = max(0.0, cfg.time_budget_s - elapsed)
        cfg.steps = max(done, min(cfg.steps, done + int(left / max(per_step, 1e-6))))
        if cfg.val_every:
            cfg.val_every = max(1, min(cfg.val_every, cfg.steps // 5 or 1))
        self._emit(StageEvent("training", f"{cfg.method}: time budget {cfg.time_budget_s:.0f} s -> {cfg.steps} steps "
                              f"({per_step:.2f} s per step)", done, cfg.steps))

    def _load_state(self, path: Path) -> None:
        meta, payload = load_checkpoint(path, kind=STATE_KIND, map_location=self.device)
        saved = TrainConfig.from_dict(meta["config"])
        self._budget_fixed = bool(meta.get("budget_fixed", False))
        if self._budget_fixed and saved.time_budget_s == self.cfg.time_budget_s:
            self.cfg.steps, self.cfg.val_every = saved.steps, saved.val_every  # fixed by the budget when it started
        if saved.method != self.cfg.method or saved.seed != self.cfg.seed or saved.steps != self.cfg.steps:
            raise ValueError(
                f"{path}: the saved run used method={saved.method}, seed={saved.seed}, steps={saved.steps}; "
                "resume with the same settings or start a new --out folder"
            )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.objective.load_state_dict(payload["objective"])
        self.objective.to(self.device)
        self.history = list(meta["history"])
        self.start_step = int(meta["step"])

    def _write_run_json(self, step: int, seconds: float) -> Path:
        path = self.out_dir / "run.json"
        if self.dist.is_main:
            doc = {
                "method": self.cfg.method,
                "steps": step,
                "seconds": round(seconds, 2),
                "device": str(self.device),
                "world_size": self.dist.world_size,
                "distributed_backend": backend_name(),
                "teacher": vars(self.teacher),
                "teacher_note": teacher_note(self.teacher, self.cfg),
                "config": self.cfg.to_dict(),
                "target_spacing_zyx": None if self.target_spacing is None else list(self.target_spacing),
                "classes": self.labelmap.names,
                "history": self.history,
                "validation": self.validation,
                "postprocessing": self.postprocessing.to_dict(),
            }
            atomic_write_text(path, json.dumps(doc, indent=1, default=str))
        return path


def online_tokens(teacher, images: torch.Tensor, stride: int) -> torch.Tensor:
    """Teacher tokens (B, C, D, h, w) of student patches (B, 1, D, H, W), one forward per slice.

    Used only for the cache-off ablation and its benchmark: the cached path computes tokens
    once per volume with the teacher's own CT window.
    """
    b, _, d, h, w = images.shape
    x = images.permute(0, 2, 1, 3, 4).reshape(b * d, 1, h, w).expand(-1, 3, -1, -1)
    x = F.interpolate(x, scale_factor=16 / stride, mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    tokens = teacher.encode(((x - mean) / std).to(images.device))
    c, th, tw = tokens.shape[1:]
    return tokens.reshape(b, d, c, th, tw).permute(0, 2, 1, 3, 4).float()


def channels_last_training(device: torch.device, student: torch.nn.Module) -> bool:
    """Whether a run trains in channels-last-3d layout: 3D students on CPU.

    Why: oneDNN's 3D convolution backward at the students' small channel counts is about 30%
    faster in that layout on CPU (unet3d width 8, depth 3, batch 4 of 16x64x64 on 2 AVX2
    cores: backward 0.60 -> 0.42 s, forward unchanged; the demo's whole DINO-Mix step on one
    core of the shared build machine: 2.53 -> 1.91 s, median of 20 steps). On CUDA it is left
    to cuDNN's own choice, and the 2D student folds z into the batch, so a 5D layout would
    only add a copy.
    """
    return device.type == "cpu" and getattr(student, "dims", 3) == 3


def _images_channels_last(batch: dict) -> dict:
    """The batch with every 5D image (B, 1, z, y, x) in channels-last-3d layout (same values)."""
    for side in ("labeled", "unlabeled"):
        part = batch.get(side)
        if part is not None and part["image"].ndim == 5:
            part["image"] = part["image"].contiguous(memory_format=torch.channels_last_3d)
    return batch


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _cpu_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _step_seed(seed: int, rank: int, step: int) -> int:
    return (int(seed) * 1_000_003 + int(rank) * 7_919 + int(step)) % (2**63 - 1)


__all__ = ["Trainer", "TrainResult", "TeacherInfo", "online_tokens", "model_meta"]
