"""The DINO-Mix objective for one training step, with each part switchable (METHOD.md §5).

``L = L_sup + lambda_u(t) L_unl + lambda_fkd(t) L_fkd``

* supervised: Dice + CE on labeled patches.
* mean teacher: the EMA student makes pseudo-labels for unlabeled patches, kept where the
  (tail-aware) confidence passes; with FKD they are further down-weighted where DINOv3's
  nearest class prototype disagrees.
* PIC: instead of raw patches the student sees the two cross-domain CutMix volumes (labeled
  context + unlabeled box, unlabeled context + labeled box), as in bidirectional copy-paste,
  so the forward cost equals the mean teacher's. Ground truth is used exactly where labeled
  voxels landed. Loss weights are (1/f_c)^beta.
* FKD: a projection head on the student's decoder features, pooled to the token grid,
  distilled towards the cached DINOv3 tokens with uniqueness weights, on every volume the
  student saw this step (labeled, unlabeled or mixed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from dinomix_core.engine.config import TrainConfig
from dinomix_core.methods.fkd import (
    PrototypeBank,
    ProjectionHead,
    TokenBank,
    fkd_loss,
    labels_to_token_grid,
    pool_to_token_grid,
    prototype_agreement_weights,
)
from dinomix_core.methods.losses import dice_ce_loss
from dinomix_core.methods.mean_teacher import effective_decay, ema_update, make_ema_teacher, pseudo_labels, tail_aware_thresholds
from dinomix_core.methods.pic import PICCurriculum, bidirectional_cutmix
from dinomix_core.methods.ramps import sigmoid_rampup


class StudentWithHead(nn.Module):
    """Student + FKD projection head as one module, so DDP syncs both and one forward serves both."""

    def __init__(self, student: nn.Module, head: nn.Module | None):
        super().__init__()
        self.student = student
        self.head = head

    def forward(self, x: torch.Tensor, token_grid: tuple[int, int, int] | None = None):
        """(logits, student tokens on ``token_grid`` or None). Features are pooled to the token
        grid before the (linear) head, so the head runs per token cell, not per voxel."""
        if self.head is None or token_grid is None:
            return self.student(x), None
        logits, features = self.student.forward_features(x)
        return logits, self.head(pool_to_token_grid(features, token_grid))


@dataclass
class StepOutput:
    loss: torch.Tensor
    parts: dict[str, float]


class Objective:
    """Holds the method state that outlives a step: EMA teacher, curriculum, prototypes."""

    def __init__(self, config: TrainConfig, student: nn.Module, num_classes: int, token_dim: int | None, *,
                 reduce=None, gather=None):
        self.cfg = config
        self.num_classes = num_classes
        self.reduce = reduce or (lambda t: t)  # DDP: all-reduce of counts so ranks agree
        self.gather = gather  # DDP: every rank's teacher tokens into every rank's token bank
        self.head = ProjectionHead(student.feature_channels, token_dim) if config.use_fkd else None
        self.ema = make_ema_teacher(student) if config.use_mean_teacher else None
        self.pic = (
            PICCurriculum(num_classes, gamma=config.pic_gamma, beta=config.pic_beta, momentum=config.freq_momentum)
            if (config.use_pic or config.use_mean_teacher)
            else None
        )
        self.prototypes = PrototypeBank(num_classes, token_dim) if config.use_fkd else None
        self.token_bank = (
            TokenBank(token_dim, capacity=8192, generator=torch.Generator().manual_seed(config.seed)) if config.use_fkd else None
        )

    # ---- state for checkpoints -----------------------------------------------------------
    def state_dict(self) -> dict:
        state = {}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.pic is not None:
            state["pic"] = self.pic.state_dict()
        if self.prototypes is not None:
            state["prototypes"] = self.prototypes.state_dict()
            state["token_bank"] = self.token_bank.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.pic is not None:
            self.pic.load_state_dict(state["pic"])
        if self.prototypes is not None:
            self.prototypes.load_state_dict(state["prototypes"])
            self.token_bank.load_state_dict(state["token_bank"])

    def to(self, device) -> "Objective":
        if self.ema is not None:
            self.ema.to(device)
        return self

    def init_frequencies(self, labels: list) -> None:
        """Class frequencies start from the labeled masks (METHOD §4)."""
        if self.pic is None:
            return
        for label in labels:
            self.pic.update_labeled(torch.as_tensor(label.astype("int64")).unsqueeze(0))

    def after_step(self, student: nn.Module, step: int) -> None:
        if self.ema is not None:
            # Warm-up decay: the teacher does not linger at the random initialisation.
            ema_update(self.ema, student, effective_decay(step, self.cfg.ema_decay))

    # ---- the step --------------------------------------------------------------------------
    def __call__(self, model: nn.Module, batch: dict, t: float, generator: torch.Generator, autocast) -> StepOutput:
        cfg = self.cfg
        lab = batch["labeled"]
        unl = batch.get("unlabeled") if cfg.use_mean_teacher else None
        parts: dict[str, float] = {}
        ramp = sigmoid_rampup(t, length=cfg.rampup_fraction)

        grid = self._token_grid(lab)
        if unl is None:
            with autocast():
                logits, proj = model(lab["image"], grid)
            loss = dice_ce_loss(logits.float(), lab["label"])
            parts["sup"] = float(loss.detach())
            tokens = lab.get("tokens")
        else:
            pseudo, confident, weight = self._pseudo_labels(unl, autocast)
            if cfg.student_noise > 0:
                unl = {**unl, "image": _noisy(unl["image"], cfg.student_noise, generator)}
            if cfg.use_pic:
                bl = lab["image"].shape[0]
                mixed_u, mixed_l = bidirectional_cutmix(
                    {"image": lab["image"], "target": lab["label"], "tokens": lab.get("tokens")},
                    {"image": unl["image"], "target": pseudo, "confident": confident, "tokens": unl.get("tokens"), "weight": weight},
                    probs_t=self.pic.probs(t).to(lab["image"].device),
                    generator=generator,
                    stride=cfg.token_stride,
                    size_range=cfg.pic_box,
                    z_range=cfg.pic_box_z,
                )
                x = torch.cat([mixed_l["image"], mixed_u["image"]])
                with autocast():
                    logits, proj = model(x, grid)
                logits = logits.float()
                cw = self.pic.loss_weights(t if cfg.pic_anneal_weights else None).to(logits.device)
                loss_sup = dice_ce_loss(
                    logits[:bl], mixed_l["target"], class_weights=cw, valid_mask=mixed_l["valid"],
                    voxel_weights=mixed_l["weight"],
                )
                loss_unl = dice_ce_loss(
                    logits[bl:], mixed_u["target"], class_weights=cw, valid_mask=mixed_u["valid"],
                    voxel_weights=mixed_u["weight"],
                )
                tokens = None if mixed_l["tokens"] is None else torch.cat([mixed_l["tokens"], mixed_u["tokens"]])
            else:
                bl = lab["image"].shape[0]
                with autocast():
                    logits, proj = model(torch.cat([lab["image"], unl["image"]]), grid)
                logits = logits.float()
                loss_sup = dice_ce_loss(logits[:bl], lab["label"])
                loss_unl = dice_ce_loss(logits[bl:], pseudo, valid_mask=confident, voxel_weights=weight)
                tokens = None if lab.get("tokens") is None else torch.cat([lab["tokens"], unl["tokens"]])
            loss = loss_sup + cfg.lambda_u * ramp * loss_unl
            parts.update(sup=float(loss_sup.detach()), unl=float(loss_unl.detach()))
            parts["confident"] = float(confident.float().mean())

        if cfg.use_fkd:
            if tokens is None:
                raise RuntimeError("FKD needs teacher tokens with every batch (token cache or online teacher)")
            loss_fkd = fkd_loss(proj.float(), tokens, bank=self.token_bank, gather=self.gather)
            loss = loss + cfg.lambda_fkd * ramp * loss_fkd
            parts["fkd"] = float(loss_fkd.detach())
            self._update_prototypes(lab)
        parts["total"] = float(loss.detach())
        return StepOutput(loss=loss, parts=parts)

    def _token_grid(self, lab: dict) -> tuple[int, int, int] | None:
        tokens = lab.get("tokens")
        if not self.cfg.use_fkd or tokens is None:
            return None
        return tuple(int(v) for v in tokens.shape[-3:])

    @torch.no_grad()
    def _pseudo_labels(self, unl: dict, autocast):
        cfg = self.cfg
        with autocast():
            probs = F.softmax(self.ema(unl["image"]).float(), dim=1)
        thresholds = tail_aware_thresholds(self.pic.freqs.to(probs.device), base=cfg.confidence, tail=cfg.tail_confidence)
        pseudo, confident = pseudo_labels(probs, class_thresholds=thresholds)
        counts = torch.bincount(pseudo[confident].reshape(-1), minlength=self.num_classes)[: self.num_classes]
        self.pic.frequency.update_pseudo_counts(self.reduce(counts.double()).cpu())
        weight = None
        if cfg.use_fkd and unl.get("tokens") is not None and bool(self.prototypes.present.any()):
            weight = prototype_agreement_weights(
                unl["tokens"], self.prototypes.prototypes, self.prototypes.present, pseudo, cfg.token_stride,
                disagree_weight=cfg.prototype_disagree_weight,
            )
        return pseudo, confident, weight

    @torch.no_grad()
    def _update_prototypes(self, lab: dict) -> None:
        tokens = lab.get("tokens")
        if tokens is None:
            return
        grid = labels_to_token_grid(lab["label"], self.cfg.token_stride, num_classes=self.num_classes)
        self.prototypes.update_from_batch(tokens, grid, reduce=self.reduce)


def _noisy(image: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """``image`` + N(0, std^2) clipped at +-2 std, drawn from the step's CPU generator (reproducible)."""
    noise = torch.randn(image.shape, generator=generator).clamp_(-2.0, 2.0).mul_(std)
    return image + noise.to(device=image.device, dtype=image.dtype)
