"""Run by torchrun in test_distributed.py: a few DINO-Mix steps per rank, then a parameter digest."""

import hashlib
import json
import os
import sys

import torch

from dinomix_core.data.dataset import CaseSpec, load_cases, load_nnunet_dataset
from dinomix_core.engine.config import TrainConfig
from dinomix_core.engine.distributed import init_distributed, shutdown_distributed
from dinomix_core.engine.trainer import TeacherInfo, Trainer
from dinomix_core.models.teacher import build_teacher

data, out = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
dist = init_distributed("cpu")
cases, labelmap, _ = load_nnunet_dataset(data)
teacher = build_teacher(weights="random", depth=1, embed_dim=32, num_heads=2)
cfg = TrainConfig(method="dinomix", steps=3, checkpoint_every=0, student_width=4, student_depth=2,
                  patch_size=(16, 32, 32), batch_labeled=1, batch_unlabeled=1)
lab = load_cases(cases[:2], labelmap=labelmap, teacher=teacher, stride=cfg.token_stride)
unl = load_cases([CaseSpec(c.case_id, c.image_path) for c in cases[2:3]], labelmap=labelmap, teacher=teacher,
                 stride=cfg.token_stride)
trainer = Trainer(cfg, lab, unl, labelmap, out_dir=out, dist=dist,
                  teacher=TeacherInfo(teacher.teacher_id, True, teacher.embed_dim))
losses = [trainer.train_step(step)["total"] for step in range(cfg.steps)]
digest = hashlib.sha256()
for name, tensor in sorted(trainer.model.state_dict().items()):
    digest.update(name.encode())
    digest.update(tensor.detach().cpu().numpy().tobytes())
ema = hashlib.sha256(b"".join(t.numpy().tobytes() for _, t in sorted(trainer.objective.ema.state_dict().items())))
freqs = trainer.objective.pic.freqs.tolist()
protos = trainer.objective.prototypes.state_dict()
bank = trainer.objective.token_bank.state_dict()
with open(os.path.join(out, f"rank{dist.rank}.json"), "w") as fh:
    json.dump({"params": digest.hexdigest(), "ema": ema.hexdigest(), "losses": losses, "freqs": freqs,
               "prototypes": protos["prototypes"].tolist(), "present": protos["present"].tolist(),
               "bank": hashlib.sha256(bank["tokens"].numpy().tobytes()).hexdigest(), "bank_count": bank["count"],
               "world": dist.world_size}, fh)
shutdown_distributed()
