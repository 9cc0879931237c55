"""Export the student of a training run's last.pt as a model.pt, to benchmark a run stopped early.

    .venv/bin/python benchmarks/export_student.py RUN_DIR DATA_DIR OUT_MODEL_PT [Z,Y,X spacing mm]

Benchmark 3 (inference) used it: on a machine shared by four agents (load 9-13 on 2 cores)
the 250-step training run of its student was stopped at step 150; its last.pt (written
every 50 steps) holds the student's weights at that step. DATA_DIR gives the class map.
"""
import sys
from pathlib import Path
from dinomix_core.engine.checkpoint import load_checkpoint, save_checkpoint, STATE_KIND, MODEL_KIND
from dinomix_core.engine.config import TrainConfig
from dinomix_core.engine.trainer import model_meta, TeacherInfo
from dinomix_core.data.dataset import load_nnunet_dataset
from dinomix_core.models import student_from_config

run, data, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
meta, payload = load_checkpoint(run / "last.pt", kind=STATE_KIND)
cfg = TrainConfig.from_dict(meta["config"])
_, labelmap, _ = load_nnunet_dataset(data, allow_unlabeled=True)
state = {k[len("student."):]: v for k, v in payload["model"].items() if k.startswith("student.")}
student = student_from_config({"name": cfg.student, "num_classes": labelmap.num_classes, "width": cfg.student_width,
                               "depth": cfg.student_depth, "norm": cfg.student_norm})
student.load_state_dict(state)
spacing = tuple(float(v) for v in sys.argv[4].split(",")) if len(sys.argv) > 4 else (2.5, 2.0, 2.0)  # medium phantom
m = model_meta(cfg, student, labelmap, TeacherInfo(**meta["teacher"]), meta["step"], spacing_zyx=spacing)
save_checkpoint(out, kind=MODEL_KIND, meta=m, tensors={"state_dict": {k: v.cpu() for k, v in student.state_dict().items()}})
print("exported step", meta["step"], "to", out)
