"""Crash safety and concurrency: a killed writer never costs a committed revision.

The kill test runs a real writer process that saves label revisions in a loop and SIGKILLs it
at random moments (inside a save most of the time, since saving is all it does), then reopens
the project and checks every revision the writer reported as saved.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from _project_fakes import organ_labels, write_image

from dinomix_core.io import LabelMap, content_hash
from dinomix_core.project import Project, ProjectBusyError

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")

WRITER = r"""
import sys
import numpy as np
from dinomix_core.project import Project
root, seed = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(seed)
print("loaded", flush=True)
sys.stdin.readline()                      # wait for "go": import time is hidden from the test
project = Project.open(root, busy_timeout=30)
cases = [c.id for c in project.cases()]
shape = project.case(cases[0]).shape_zyx
print("ready", flush=True)
while True:
    labels = rng.integers(0, 14, size=shape, dtype=np.uint8)   # noisy: slow to compress, a long save
    rev = project.save_labels(cases[int(rng.integers(len(cases)))], labels, final=bool(rng.integers(2)))
    print(f"saved {rev.id} {rev.file_hash}", flush=True)
"""

FAULT = r"""
import os, signal, sys
import numpy as np
from dinomix_core.project import Project, revisions
where = sys.argv[2]
def die(*args, **kwargs):
    if where == "mid_write":        # the temp file exists, half written
        tmp = args[1].parent / ("." + args[1].name.split(".")[0] + ".partial.nii.gz")
        tmp.write_bytes(b"\x1f\x8b half a file")
    os.kill(os.getpid(), signal.SIGKILL)
if where == "before_row":           # the label file is complete, its row not yet inserted
    revisions.content_hash = lambda path: die()
else:
    revisions.write_labels = die
project = Project.open(sys.argv[1])
project.save_labels("liver_000", np.zeros(project.case("liver_000").shape_zyx, np.uint8))
"""


@pytest.fixture
def big_project(tmp_path):
    """A project on 32x64x64 images: saves take long enough for kills to land inside them."""
    for i in range(2):
        write_image(tmp_path / "scans" / f"liver_{i:03d}_0000.nii.gz", seed=i, shape=(32, 64, 64))
    with Project.init(tmp_path / "proj", label_map=LabelMap.preset("btcv13")) as proj:
        proj.add_images([tmp_path / "scans"])
    return tmp_path / "proj"


def _spawn(root, seed: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(seed)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc


def _check_consistent(root, committed: dict[int, str]) -> None:
    with Project.open(root) as proj:  # opening tidies leftovers
        rows = {r["id"]: r for r in proj.query("SELECT id, file, file_hash FROM revisions")}
        for rev_id, digest in committed.items():
            assert rev_id in rows, f"revision {rev_id} was reported saved but is gone"
            assert rows[rev_id]["file_hash"] == digest
            assert content_hash(proj.root / rows[rev_id]["file"]) == digest
        on_disk = {p.relative_to(proj.root).as_posix() for p in (proj.root / "labels").rglob("*") if p.is_file()}
        assert on_disk == {r["file"] for r in rows.values()}, "files without rows (or rows without files) remain"
        assert proj.query_one("PRAGMA integrity_check")["integrity_check"] == "ok"


def test_killing_a_writer_mid_save_never_loses_a_committed_revision(big_project):
    rng = np.random.default_rng(2024)
    committed: dict[int, str] = {}
    started = time.monotonic()
    nxt = _spawn(big_project, 0)
    for i in range(20):
        proc, nxt = nxt, (_spawn(big_project, i + 1) if i < 19 else None)
        assert proc.stdout.readline().strip() == "loaded", proc.stderr.read()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(float(rng.uniform(0.0, 0.3)))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        for line in out.splitlines():
            _, rev_id, digest = line.split()
            committed[int(rev_id)] = digest
        _check_consistent(big_project, committed)
    assert len(committed) >= 20, "the writer hardly saved anything; the test proves little"
    interrupted = [p for p in (big_project / "quarantine").rglob("*") if p.is_file()]
    assert interrupted, "no kill landed inside a save; the test proved nothing about them"
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("where", ["before_row", "mid_write"])
def test_crash_leftovers_are_quarantined_not_counted_or_deleted(project, where):
    keep = project.save_labels("liver_001", organ_labels())
    proc = subprocess.run([sys.executable, "-c", FAULT, str(project.root), where], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = [p for p in (project.root / "labels" / "liver_000").rglob("*") if p.is_file()]
    assert len(leftovers) == 1
    content = leftovers[0].read_bytes()
    with Project.open(project.root) as again:
        assert again.revisions("liver_000") == []
        assert [r.id for r in again.revisions("liver_001")] == [keep.id]
        moved = [p for p in again.quarantine_dir.rglob("*") if p.is_file()]
        assert len(moved) == 1
        assert moved[0].name == leftovers[0].name and moved[0].read_bytes() == content
        assert not leftovers[0].exists()
        assert again.status()["quarantined_files"] == 1


def test_two_processes_writing_at_once_both_succeed(project):
    code = ("import sys; from dinomix_core.project import Project; from _project_fakes import organ_labels\n"
            "p = Project.open(sys.argv[1], busy_timeout=30)\n"
            "for i in range(8):\n"
            "    r = p.save_labels(sys.argv[2], organ_labels(i))\n"
            "    print(r.id, r.file_hash, flush=True)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(project.root), case], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for case in ("liver_000", "liver_001")]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    committed = {int(a): b for out, _ in results for a, b in (line.split() for line in out.splitlines())}
    assert len(committed) == 16
    _check_consistent(project.root, committed)
    assert len(project.revisions("liver_000")) == len(project.revisions("liver_001")) == 8


def test_second_writer_waits_for_the_lock_then_saves(project):
    other = Project.open(project.root)
    released = threading.Event()

    def hold_lock():
        with other.write():
            time.sleep(0.5)
        released.set()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    time.sleep(0.1)
    rev = project.save_labels("liver_002", organ_labels())  # waits (busy timeout 15 s) instead of failing
    holder.join()
    assert released.is_set() and project.revision(rev.id).case_id == "liver_002"
    other.close()


def test_writer_blocked_past_its_timeout_gets_a_clear_error(project):
    impatient = Project.open(project.root, busy_timeout=0.2)
    with project.write():
        with pytest.raises(ProjectBusyError, match="another program kept the project locked"):
            impatient.save_labels("liver_002", organ_labels())
    assert impatient.revisions("liver_002") == []
    assert not [p for p in (project.root / "labels").rglob("*") if p.is_file()]  # nothing half-saved
    impatient.close()


def test_reader_thread_is_not_blocked_by_a_save_in_another_thread(project):
    project.set_meta("note", "committed")
    entered, finished = threading.Event(), threading.Event()

    def slow_writer():
        with project.write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('note', 'uncommitted')")
            entered.set()
            finished.wait(10)

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert entered.wait(10)
    started = time.monotonic()
    seen = project.meta("note")  # another thread: its own connection, the last committed state
    waited = time.monotonic() - started
    finished.set()
    writer.join()
    assert seen == "committed" and waited < 5
    assert project.meta("note") == "uncommitted"  # committed once the writer finished
