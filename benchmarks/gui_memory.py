"""Peak memory of the app with a 512 x 512 x 300 CT open and its prediction and uncertainty shown.

Run through ``python -m benchmarks.gui_responsiveness --memory-only`` (or as part of the
whole GUI benchmark): that builds the project here (:func:`make_big_project`) and measures
in a fresh process (``python -m benchmarks.gui_memory PROJECT``), so the volume built for
it is not in the figures.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.gui_responsiveness import wait


def make_big_project(work: Path) -> Path:
    """A project with a 512x512x300 CT-like volume and a stored model revision + uncertainty."""
    from dinomix_core.data.phantom import phantom_labelmap
    from dinomix_core.io import Volume, write_image
    from dinomix_core.project import Project

    shape = (300, 512, 512)
    rng = np.random.default_rng(0)
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    body = ((yy - 256) / 200.0) ** 2 + ((xx - 256) / 230.0) ** 2 < 1.0
    organ = ((yy - 220) / 60.0) ** 2 + ((xx - 200) / 80.0) ** 2 + ((zz - 150) / 90.0) ** 2 < 1.0
    ct = np.where(body, 40, -1000).astype(np.int16) + rng.integers(-20, 20, shape, dtype=np.int16)
    ct[organ] += 20
    image = write_image(Volume(ct, spacing_zyx=(1.0, 0.8, 0.8), modality="CT"), work / "big_ct_0000.nii.gz")
    with Project.init(work / "project", label_map=phantom_labelmap()) as project:
        case = project.add_image(image).case_id
        run = project.start_run({"note": "memory benchmark stand-in"}, "supervised", "none")
        labels = (organ & (ct > 50)).astype(np.uint8) * 6
        unc = np.where(organ, 0.6, 0.05).astype(np.float32)
        project.add_prediction(run, case, labels, 0.5, None, uncertainty_map=unc)
        project.finish_run(run, "completed")
    return work / "project"


def _proc_status_mib(key: str) -> float | None:
    """VmRSS (now) or VmHWM (peak) of this process in MiB, from /proc (Linux); None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM starts afresh at exec; ``ru_maxrss`` is inherited from the
    parent at fork on Linux, and the parent here has just built a 512x512x300 volume (the
    figures before 2026-12-05 17:10 took that parent's peak, 1.36 GB, for "after imports")."""
    peak = _proc_status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory(project: Path) -> dict:
    """Peak RSS of a fresh app process that opens the big project and shows the prediction + uncertainty."""
    from napari.qt import get_qapp

    os.environ.setdefault("DINOMIX_CONFIG_DIR", str(project.parent / "config"))
    app = get_qapp()
    from dinomix_app.main_window import MainWindow

    before = _proc_status_mib("VmRSS") or _peak_rss_mib()  # the app's imports (napari, Qt; no torch) done
    window = MainWindow(project)
    window.show()
    wait(app, 3.0)
    session = window.session
    session.show_uncertainty(session.labels_layer.metadata["dinomix_revision"], visible=True)
    wait(app, 3.0)
    layers = [(layer.name, str(layer.data.dtype), round(layer.data.nbytes / 2**20, 1)) for layer in window.viewer.layers]
    peak = _peak_rss_mib()
    window.panel.shutdown()
    window.close()
    ct_mib = 300 * 512 * 512 * 2 / 2**20
    return {"volume_shape_zyx": [300, 512, 512], "ct_int16_mib": round(ct_mib, 1), "peak_rss_mib": round(peak, 1),
            "peak_over_ct": round(peak / ct_mib, 2), "rss_after_imports_mib": round(before, 1),
            "app_added_mib": round(peak - before, 1), "layers": layers,
            "torch_in_gui_process": "torch" in sys.modules,
            "note": "fresh process (the volume is made in another one); labels are an intensity-threshold stand-in "
                    "stored as a model revision (memory, not quality)"}


def measure_memory() -> dict:
    work = Path(tempfile.mkdtemp(prefix="dinomix-gui-mem-"))
    project = make_big_project(work)
    out = subprocess.run([sys.executable, "-m", "benchmarks.gui_memory", str(project)],
                         capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": out.stderr.strip().splitlines()[-1:]}


def main(argv=None) -> int:
    project = Path((argv if argv is not None else sys.argv[1:])[0])
    print(json.dumps(memory(project)))
    from dinomix_app.cli import leave

    return leave(0)


if __name__ == "__main__":
    raise SystemExit(main())
