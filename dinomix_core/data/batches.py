"""Training batches: labeled and unlabeled patches, reproducible from (seed, rank, step).

Every batch is a pure function of (seed, rank, step): its random generator is seeded with
exactly those three numbers. A run resumed at step k therefore sees the batches it would have
seen, DDP ranks draw different patches without talking to each other, and a background
prefetch thread cannot change what is drawn, only when.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator, Sequence

import numpy as np
import torch

from dinomix_core.data.augment import augment_batch
from dinomix_core.data.patches import PatchSampler


class TrainBatches:
    """Endless iterator of {"labeled": {...}, "unlabeled": {...} | None} batches.

    labeled: image (B, 1, D, H, W) float32, label (B, D, H, W) int64, tokens (B, C, D, h, w)
    float32 | None; unlabeled: image, tokens (None when there are no unlabeled cases or
    ``batch_unlabeled`` is 0). Both also carry "case_ids" and "origins" (z, y, x voxels).
    Cases are drawn uniformly with replacement; patches come from ``sampler``. With
    ``augment`` the batch is augmented here (on ``device``); pass ``augment=False`` to run
    ``augment_batch`` yourself, e.g. on the GPU. ``prefetch`` > 0 prepares that many batches
    ahead on a background thread.
    """

    def __init__(
        self,
        labeled_cases: Sequence,
        unlabeled_cases: Sequence,
        sampler: PatchSampler,
        *,
        batch_labeled: int = 2,
        batch_unlabeled: int = 2,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        augment: bool = True,
        augment_kwargs: dict | None = None,
        device: torch.device | str = "cpu",
        prefetch: int = 0,
        start_step: int = 0,
    ):
        if not labeled_cases:
            raise ValueError("training needs at least one labeled case")
        if any(case.label is None for case in labeled_cases):
            missing = [case.case_id for case in labeled_cases if case.label is None]
            raise ValueError(f"labeled cases without a label: {', '.join(missing)}")
        if batch_labeled < 1 or batch_unlabeled < 0:
            raise ValueError("batch_labeled must be >= 1 and batch_unlabeled >= 0")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        with_tokens = {case.tokens is not None for case in (*labeled_cases, *unlabeled_cases)}
        if len(with_tokens) > 1:
            raise ValueError("either every case carries teacher tokens or none does")
        self.labeled_cases = list(labeled_cases)
        self.unlabeled_cases = list(unlabeled_cases)
        self.sampler = sampler
        self.batch_labeled = int(batch_labeled)
        self.batch_unlabeled = int(batch_unlabeled) if self.unlabeled_cases else 0
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.augment = bool(augment)
        self.augment_kwargs = dict(augment_kwargs or {})
        self.device = torch.device(device)
        self.prefetch = max(0, int(prefetch))
        self.step = int(start_step)
        self._worker: _Prefetcher | None = None
        sampler.prepare(self.labeled_cases)

    def batch_at(self, step: int) -> dict:
        """The batch of training step ``step`` (the same every time it is asked for)."""
        rng = np.random.default_rng([self.seed, self.rank, int(step)])
        labeled = self._draw(self.labeled_cases, self.batch_labeled, rng, with_label=True)
        unlabeled = None
        if self.batch_unlabeled:
            unlabeled = self._draw(self.unlabeled_cases, self.batch_unlabeled, rng, with_label=False)
        return {"step": int(step), "labeled": labeled, "unlabeled": unlabeled}

    def _draw(self, cases: Sequence, count: int, rng: np.random.Generator, *, with_label: bool) -> dict:
        picks = rng.integers(len(cases), size=count)
        patches = [self.sampler.sample(cases[i], rng) for i in picks]
        batch = {
            "image": self._stacked([p["image"] for p in patches]),
            "label": self._stacked([p["label"] for p in patches]).long() if with_label else None,
            "tokens": None,
        }
        if patches[0]["tokens"] is not None:
            batch["tokens"] = self._stacked([p["tokens"] for p in patches]).float()
        if self.augment:
            batch = augment_batch(batch, rng, **self.augment_kwargs)
        if not with_label:
            batch.pop("label")
        batch["case_ids"] = [cases[i].case_id for i in picks]
        batch["origins"] = [p["origin"] for p in patches]
        return batch

    def _stacked(self, arrays: list[np.ndarray]) -> torch.Tensor:
        """One tensor on ``self.device``; for a GPU stacked straight into pinned memory, so the
        copy over is a fast DMA instead of a staged pageable copy."""
        if self.device.type != "cuda":
            return torch.from_numpy(np.stack(arrays))
        dtype = torch.from_numpy(arrays[0][:0]).dtype
        out = torch.empty((len(arrays), *arrays[0].shape), dtype=dtype, pin_memory=True)
        np.stack(arrays, out=out.numpy())
        return out.to(self.device, non_blocking=True)

    # ---- iteration ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        if self.prefetch:
            if self._worker is None or self._worker.next_step != self.step:
                self.close()
                self._worker = _Prefetcher(self.batch_at, self.step, self.prefetch)
            batch = self._worker.get()
        else:
            batch = self.batch_at(self.step)
        self.step += 1
        return batch

    def seek(self, step: int) -> None:
        """Continue from ``step`` (e.g. after loading a checkpoint)."""
        self.step = int(step)

    def close(self) -> None:
        """Stop the prefetch thread, if any."""
        if getattr(self, "_worker", None) is not None:
            self._worker.stop()
            self._worker = None

    def __del__(self) -> None:
        self.close()


class _Prefetcher:
    """Background thread computing ``make(step)`` for consecutive steps into a bounded queue."""

    def __init__(self, make, start: int, depth: int):
        self.next_step = start
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(make, start), daemon=True, name="dinomix-batches")
        self._thread.start()

    def _run(self, make, step: int) -> None:
        while not self._stop.is_set():
            try:
                item = (step, make(step), None)
            except BaseException as exc:  # handed to the consumer, raised there
                item = (step, None, exc)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return
            step += 1

    def get(self) -> dict:
        step, batch, error = self._queue.get()
        if error is not None:
            self.stop()
            raise error
        self.next_step = step + 1
        return batch

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
