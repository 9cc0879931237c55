"""Training on CUDA with bf16 autocast: every method, exact-enough resume, NCCL under torchrun.

Skipped without CUDA (CI has none); `benchmarks/gpu.sh` runs them on a GPU machine.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from dinomix_core.engine.config import METHODS, TrainConfig
from dinomix_core.engine.events import CancelToken, StepEvent, TrainingCancelled
from dinomix_core.engine.pipeline import LoadedModel, train_on_dataset
from dinomix_core.io import read_volume

from _engine_settings import TINY, TINY_TEACHER

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

HELD_OUT = ["phantom_003"]


def _train(phantom_dir, out, method, steps, **kw):
    cfg = TrainConfig(method=method, steps=steps, checkpoint_every=kw.pop("checkpoint_every", 0), **TINY)
    return train_on_dataset(
        cfg, phantom_dir, 2, out, exclude=HELD_OUT, teacher_weights="random", teacher_overrides=TINY_TEACHER,
        cache_dir=out.parent / "tokens", **kw,
    )


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_on_cuda_and_predicts_like_cpu(phantom_dir, tmp_path, method):
    result = _train(phantom_dir, tmp_path / "run", method, 4)
    run = json.loads(result.run_json.read_text())
    assert run["device"].startswith("cuda")
    assert all(math.isfinite(v) for h in result.history for v in h.values())
    volume = read_volume(phantom_dir / "imagesTr" / "phantom_003_0000.nii.gz")
    on_gpu = LoadedModel(result.model_path, device="cuda").predict(volume)
    on_cpu, probs = LoadedModel(result.model_path, device="cpu").predict(volume, return_probs=True)
    # bf16 autocast on the GPU against float32 on the CPU: a 4-step network is unsure almost
    # everywhere, so only voxels where the CPU's top two classes are 0.05 apart must agree.
    top2 = probs.topk(2, dim=0).values
    decided = ((top2[0] - top2[1]) > 0.05).numpy()
    same = on_gpu.array == on_cpu.array
    assert decided.sum() > 1000 and same[decided].mean() > 0.999 and same.mean() > 0.95


def test_resume_on_cuda_follows_the_same_loss_curve(phantom_dir, tmp_path):
    straight = _train(phantom_dir, tmp_path / "straight", "dinomix", 6)
    cancel = CancelToken()

    def stop_after_three(event):
        if isinstance(event, StepEvent) and event.step == 3:
            cancel.cancel()

    with pytest.raises(TrainingCancelled):
        _train(phantom_dir, tmp_path / "resumed", "dinomix", 6, callbacks=[stop_after_three], cancel=cancel)
    resumed = _train(phantom_dir, tmp_path / "resumed", "dinomix", 6, resume=True)
    a = [h["total"] for h in straight.history]
    b = [h["total"] for h in resumed.history]
    # cuDNN's backward kernels are not bitwise deterministic; the curves agree to bf16 noise.
    np.testing.assert_allclose(b, a, rtol=2e-2, atol=1e-3)


def test_torchrun_trains_with_nccl(phantom_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "dinomix_core.cli", "train", "--data", str(phantom_dir),
           "--labeled", "2", "--exclude", HELD_OUT[0], "--method", "dinomix", "--teacher", "random",
           "--steps", "3", "--patch", "16,32,32", "--width", "4", "--depth", "2", "--device", "cuda",
           "--cache-dir", str(tmp_path / "tokens"), "--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["device"].startswith("cuda") and run["steps"] == 3
    assert run["distributed_backend"] == "nccl"
