"""Two gloo processes under torchrun train a few steps and stay in sync."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_stay_in_sync(phantom_dir, tmp_path):
    worker = Path(__file__).with_name("_ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(worker), str(phantom_dir), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world"] == r1["world"] == 2
    # Gradients are averaged: both ranks hold identical weights, EMA teachers, class frequencies
    # and DINOv3 class prototypes (built from the labeled voxels of both ranks) ...
    assert r0["params"] == r1["params"]
    assert r0["ema"] == r1["ema"]
    np.testing.assert_allclose(r0["freqs"], r1["freqs"], rtol=1e-12)
    assert r0["present"] == r1["present"] and sum(r0["present"]) > 1
    np.testing.assert_allclose(r0["prototypes"], r1["prototypes"], rtol=0, atol=1e-6)
    # ... and one token bank holding both ranks' teacher tokens (so a resume restores it exactly)
    assert r0["bank"] == r1["bank"] and r0["bank_count"] == r1["bank_count"] > 0
    # ... while each rank drew its own patches.
    assert r0["losses"] != r1["losses"]


def test_one_process_under_torchrun_starts_a_gloo_group(phantom_dir, tmp_path):
    """The same set-up path as a multi-node launch, at world size 1 (NCCL: test_trainer_cuda)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "dinomix_core.cli", "train", "--data", str(phantom_dir),
           "--labeled", "2", "--exclude", "phantom_003", "--method", "supervised", "--steps", "1",
           "--patch", "16,32,32", "--width", "4", "--depth", "2", "--device", "cpu", "--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["distributed_backend"] == "gloo" and run["world_size"] == 1
    plain = subprocess.run([sys.executable, "-m", "dinomix_core.cli", "train", *cmd[cmd.index("--data"):-1],
                            str(tmp_path / "plain")], env=env, capture_output=True, text=True, encoding="utf-8", errors="replace",
                           timeout=300)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert json.loads((tmp_path / "plain" / "run.json").read_text())["distributed_backend"] is None
