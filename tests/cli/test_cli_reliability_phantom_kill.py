"""SIGKILL during `dinomix phantom --force` leaves the old data set or the new one, never a mix
(issue 13, data loss item 4).

A real `dinomix phantom` subprocess rebuilding a data set with another seed is killed at
random moments; afterwards every case file must be byte-identical to the one data set the
dataset.json names (and the case set complete), and the next run must succeed and tidy up.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dinomix_core.data.phantom import write_phantom_dataset

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
CASES = 3


def content(folder: Path) -> dict[str, str]:
    """Case files (imagesTr/, labelsTr/) -> sha256."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for sub in ("imagesTr", "labelsTr") for p in sorted((folder / sub).glob("*"))}


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[int, dict[str, str]]:
    root = tmp_path_factory.mktemp("ref")
    refs = {}
    for seed in (1, 2):
        write_phantom_dataset(root / f"s{seed}", CASES, seed, "small")
        refs[seed] = content(root / f"s{seed}")
    assert refs[1] != refs[2]
    return refs


def phantom_cmd(out: Path, seed: int) -> list[str]:
    return [sys.executable, "-m", "dinomix_core.cli", "phantom", "--out", str(out), "--cases", str(CASES),
            "--seed", str(seed), "--size", "small", "--force"]


def assert_whole(out: Path, references) -> int:
    seed = json.loads((out / "dataset.json").read_text())["dinomix_phantom"]["seed"]
    assert content(out) == references[seed], f"data set at {out} mixes seeds (dataset.json says {seed})"
    return seed


def test_sigkill_at_random_points_leaves_old_or_new(tmp_path, references):
    out = tmp_path / "ds"
    write_phantom_dataset(out, CASES, 1, "small")
    (out / "notes.txt").write_text("the user's own file")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    rng = random.Random(13)
    # Time one full run so the kill points spread over its whole length (imports included).
    t0 = time.perf_counter()
    subprocess.run(phantom_cmd(out, 2), env=env, check=True, capture_output=True, timeout=120)
    full = time.perf_counter() - t0
    assert assert_whole(out, references) == 2
    seen = set()
    current = 2
    for attempt in range(6):
        seed = 1 if current == 2 else 2
        proc = subprocess.Popen(phantom_cmd(out, seed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.0) * full)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        current = assert_whole(out, references)
        seen.add("new" if current == seed else "old")
        assert (out / "notes.txt").read_text() == "the user's own file"
    # The next run finishes any interrupted swap and removes the half-built folders.
    subprocess.run(phantom_cmd(out, 1), env=env, check=True, capture_output=True, timeout=120)
    assert assert_whole(out, references) == 1
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"], "staging folders were left behind"
    assert seen  # at least one kill landed (usually both outcomes occur)


def test_a_failure_midway_leaves_the_old_data_set(tmp_path, references, monkeypatch):
    out = tmp_path / "ds"
    write_phantom_dataset(out, CASES, 1, "small")
    import dinomix_core.data.phantom as phantom

    real = phantom.write_labels
    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(phantom, "write_labels", fail_on_second)
    with pytest.raises(OSError):
        write_phantom_dataset(out, CASES, 2, "small", overwrite=True)
    assert assert_whole(out, references) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
