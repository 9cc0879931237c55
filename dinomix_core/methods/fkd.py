"""FKD: uniqueness-weighted distillation of frozen DINOv3 tokens, and prototype anchoring (METHOD §3).

Shapes (axis order z, y, x):
    teacher / student tokens  (B, C_t, D, h, w)  one token grid per axial slice; D = slices of the
                                                 patch, (h, w) = (H / s, W / s) for the integer
                                                 in-plane token stride s; token cell (i, j)
                                                 covers voxels [i*s:(i+1)*s, j*s:(j+1)*s] in (y, x)
    labels / pseudo-labels    (B, D, H, W)       long, voxel grid
    labels on the token grid  (B, D, h, w)       long, -1 = ignore
    valid masks on the grid   (B, D, h, w)       bool

An all-zero teacher token marks padding (the token cache pads with zeros) and is ignored by every
function here. Teacher tokens are never differentiated: they are detached on entry.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dinomix_core.methods._common import float32_region

__all__ = [
    "ProjectionHead",
    "pool_to_token_grid",
    "uniqueness_weights",
    "TokenBank",
    "fkd_loss",
    "labels_to_token_grid",
    "class_prototypes",
    "PrototypeBank",
    "prototype_agreement_weights",
]

_EPS = 1e-8


class ProjectionHead(nn.Module):
    """1x1x1 convolution(s) from a student decoder stage to the teacher's token dimension.

    ``hidden_channels=None`` (default) is a single linear 1x1x1 conv, as in METHOD §3: the
    distillation then shapes the decoder features themselves rather than a private MLP. Give
    ``hidden_channels`` for conv -> GELU -> conv when the stage is much narrower than C_t and a
    linear map cannot reach the teacher's feature space. Output is not normalised; ``fkd_loss``
    normalises. The head exists only for training and is dropped with the rest of FKD.
    """

    def __init__(self, in_channels: int, token_dim: int, hidden_channels: int | None = None) -> None:
        super().__init__()
        if hidden_channels is None:
            self.net = nn.Conv3d(in_channels, token_dim, kernel_size=1)
        else:
            self.net = nn.Sequential(
                nn.Conv3d(in_channels, hidden_channels, kernel_size=1),
                nn.GELU(),
                nn.Conv3d(hidden_channels, token_dim, kernel_size=1),
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, D', H', W') -> (B, token_dim, D', H', W')."""
        return self.net(features)


def pool_to_token_grid(features: torch.Tensor, token_grid: tuple[int, int, int]) -> torch.Tensor:
    """Resample student features (B, C, D', H', W') onto the token grid (B, C, D, h, w).

    Axes larger than the grid are average-pooled per token cell first; axes smaller than it
    (a decoder stage downsampled in z) are then linearly interpolated up. Both maps are linear
    and act on different axes, so the order does not change the result, but pooling first keeps
    the interpolation (and its backward pass) on the small token grid. When H' = H (a
    full-resolution stage) cell (i, j) is exactly the mean over voxels [i*s:(i+1)*s] in y and
    [j*s:(j+1)*s] in x, i.e. what the teacher saw for that token. Pool *before* a linear
    projection head: the two commute, and the head then runs on token cells, not voxels.
    """
    if features.dim() != 5:
        raise ValueError(f"features must be (B, C, D', H', W'), got shape {tuple(features.shape)}")
    target = tuple(int(v) for v in token_grid)
    if len(target) != 3 or min(target) < 1:
        raise ValueError(f"token_grid must be (D, h, w) with positive sizes, got {token_grid}")
    size = tuple(features.shape[2:])
    down = tuple(min(a, b) for a, b in zip(size, target))
    if down != size:
        features = F.adaptive_avg_pool3d(features, down)
    if down != target:
        features = F.interpolate(features, size=target, mode="trilinear", align_corners=False)
    return features


@torch.no_grad()
def uniqueness_weights(
    tokens: torch.Tensor,
    *,
    bank: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Semantic-uniqueness weights w_i = u_i / mean(u), u_i = 1 - mean_j cos(t_i, t_j), clamped >= 0.

    ``tokens`` (N, C) must be L2-normalised. The reference set j runs over the tokens plus, when
    given, the ``bank`` (M, C) of recent teacher tokens (also normalised). Because
    mean_j cos(t_i, t_j) = t_i . mean_j t_j for unit vectors, this is O(N C), no N x N matrix.
    Tokens of the large uniform regions sit near the mean direction and get low weight; tokens of
    small, distinctive organs point away from it and get high weight. If every u_i is 0 (all
    tokens identical) the weights are uniform ones.

    ``mask`` (N,) bool, optional: only masked-in tokens enter the reference set and the mean of
    u; masked-out tokens get weight 0. (It lets callers skip boolean indexing, which would force
    a device sync.) Returns float32 (N,), no grad.
    """
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be (N, C), got shape {tuple(tokens.shape)}")
    t = tokens.float()
    if t.shape[0] == 0:
        return t.new_zeros(0)
    m = torch.ones(t.shape[0], device=t.device) if mask is None else mask.to(t.device).float()
    if m.shape != (t.shape[0],):
        raise ValueError(f"mask must be ({t.shape[0]},), got {tuple(m.shape)}")
    ref_sum = (t * m.unsqueeze(1)).sum(0)
    count = m.sum()
    if bank is not None and bank.numel() > 0:
        if bank.dim() != 2 or bank.shape[1] != t.shape[1]:
            raise ValueError(f"bank must be (M, {t.shape[1]}), got shape {tuple(bank.shape)}")
        ref_sum = ref_sum + bank.to(device=t.device, dtype=torch.float32).sum(0)
        count = count + bank.shape[0]
    mean_dir = ref_sum / count.clamp_min(1.0)
    u = (1.0 - t @ mean_dir).clamp_min(0.0) * m
    mean_u = u.sum() / m.sum().clamp_min(1.0)
    return torch.where(mean_u > _EPS, u / mean_u.clamp_min(_EPS), m)


class TokenBank:
    """FIFO memory of recent (L2-normalised) teacher tokens, the reference set for uniqueness.

    With batches of only 2 + 2 patches the batch mean direction swings with whatever organs the
    crops hit; averaging over the last ``capacity`` tokens makes "common" mean common across the
    data set. A push larger than the capacity keeps a random subset (not the last rows, which
    would all come from the last slices of the last volume). Stored float32 on the device of the
    first push.
    """

    def __init__(self, dim: int, capacity: int = 8192, *, generator: torch.Generator | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"TokenBank capacity must be >= 1, got {capacity}")
        self.dim = int(dim)
        self.capacity = int(capacity)
        self.generator = generator
        self._buf: torch.Tensor | None = None
        self._ptr = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def tokens(self) -> torch.Tensor | None:
        """(M, C) stored tokens (M <= capacity), or None before the first push."""
        if self._buf is None:
            return None
        return self._buf[: self._count]

    @torch.no_grad()
    def push(self, tokens: torch.Tensor) -> None:
        """Append (N, C) tokens, evicting the oldest when full."""
        if tokens.dim() != 2 or tokens.shape[1] != self.dim:
            raise ValueError(f"TokenBank.push expects (N, {self.dim}), got shape {tuple(tokens.shape)}")
        t = tokens.detach().float()
        if t.shape[0] == 0:
            return
        if t.shape[0] > self.capacity:
            idx = torch.randperm(t.shape[0], generator=self.generator)[: self.capacity].to(t.device)
            t = t[idx]
        if self._buf is None:
            self._buf = torch.zeros(self.capacity, self.dim, device=t.device)
        t = t.to(self._buf.device)
        n = t.shape[0]
        end = self._ptr + n
        if end <= self.capacity:
            self._buf[self._ptr : end] = t
        else:
            first = self.capacity - self._ptr
            self._buf[self._ptr :] = t[:first]
            self._buf[: n - first] = t[first:]
        self._ptr = end % self.capacity
        self._count = min(self.capacity, self._count + n)

    def state_dict(self) -> dict:
        """Stored tokens, write position and the subset generator's state, for an exact resume."""
        return {
            "tokens": None if self._buf is None else self._buf.detach().cpu().clone(),
            "ptr": self._ptr,
            "count": self._count,
            "generator": None if self.generator is None else self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        buf = state["tokens"]
        if buf is not None and tuple(buf.shape) != (self.capacity, self.dim):
            raise ValueError(f"checkpoint token bank is {tuple(buf.shape)}, expected ({self.capacity}, {self.dim})")
        # Same device as before, or as the checkpoint was mapped to (the training device).
        device = self._buf.device if self._buf is not None else (buf.device if buf is not None else "cpu")
        self._buf = None if buf is None else buf.float().to(device)
        self._ptr = int(state["ptr"])
        self._count = int(state["count"])
        if state.get("generator") is not None and self.generator is not None:
            # A CPU generator's state; a checkpoint mapped to the GPU carries it there.
            self.generator.set_state(state["generator"].cpu())

    def reset(self) -> None:
        """Forget every stored token."""
        self._buf = None
        self._ptr = 0
        self._count = 0


def _tokens_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, D, h, w) -> (B, D, h, w, C)."""
    return x.permute(0, 2, 3, 4, 1)


def fkd_loss(
    student_tokens: torch.Tensor,
    teacher_tokens: torch.Tensor,
    *,
    valid_mask: torch.Tensor | None = None,
    bank: TokenBank | torch.Tensor | None = None,
    use_uniqueness: bool = True,
    update_bank: bool = True,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``sum_i w_i (1 - cos(s_i, t_i)) / sum_i w_i`` over valid tokens i (METHOD §3).

    Args:
        student_tokens: (B, C_t, D, h, w) projected student features on the token grid
            (e.g. ``pool_to_token_grid(head(stage), grid)``); normalised here.
        teacher_tokens: (B, C_t, D, h, w) DINOv3 tokens (float16 cache is fine); detached and
            re-normalised here (mixing and float16 storage leave them slightly off unit length).
        valid_mask: optional (B, D, h, w) bool; all-zero teacher tokens (padding) are always
            excluded in addition.
        bank: optional reference set for the uniqueness weights: a (M, C_t) tensor or a
            :class:`TokenBank`; a TokenBank is updated in place with this batch's valid teacher
            tokens *after* the weights are computed (unless ``update_bank=False``).
        use_uniqueness: False gives plain cosine distillation (w_i = 1), for the ablation.
        gather: under DDP, concatenates the valid tokens of every rank before they enter the
            bank, so all ranks keep the same bank (and a resumed run restores it exactly).

    Returns a float32 scalar; 0 connected to the student graph when no token is valid.
    """
    if student_tokens.shape != teacher_tokens.shape or student_tokens.dim() != 5:
        raise ValueError(
            "student and teacher tokens must both be (B, C_t, D, h, w) with equal shapes, got "
            f"{tuple(student_tokens.shape)} and {tuple(teacher_tokens.shape)}"
        )
    with float32_region(student_tokens.device):
        c = student_tokens.shape[1]
        t = F.normalize(_tokens_last(teacher_tokens.detach().float()).reshape(-1, c), dim=-1)
        s = F.normalize(_tokens_last(student_tokens.float()).reshape(-1, c), dim=-1)
        valid = t.abs().sum(-1) > 0  # padding tokens are all zero (and stay zero after normalize)
        if valid_mask is not None:
            expected = (student_tokens.shape[0],) + tuple(student_tokens.shape[2:])
            if tuple(valid_mask.shape) != expected:
                raise ValueError(f"valid_mask must be (B, D, h, w) = {expected}, got {tuple(valid_mask.shape)}")
            valid = valid & valid_mask.to(valid.device).bool().reshape(-1)
        if use_uniqueness:
            ref = bank.tokens if isinstance(bank, TokenBank) else bank
            w = uniqueness_weights(t, bank=ref, mask=valid)
        else:
            w = valid.float()
        if isinstance(bank, TokenBank) and update_bank:
            bank.push(t[valid] if gather is None else gather(t[valid]))
        dist = 1.0 - (s * t).sum(-1)
        # Masked sums instead of boolean indexing: no device sync, and an exact 0 that is still
        # connected to the student graph when no token is valid.
        return (w * dist).sum() / w.sum().clamp_min(_EPS)


def labels_to_token_grid(
    labels: torch.Tensor,
    stride: int,
    *,
    num_classes: int | None = None,
    ignore_index: int = -1,
) -> torch.Tensor:
    """Voxel labels (B, D, H, W) -> one label per token cell (B, D, h, w), h = H / stride.

    Rule (chosen for minority organs): within a cell, **any foreground voxel wins over
    background**; among foreground classes the most frequent in the cell wins (ties: lower class
    index); a cell of pure background is background; a cell without valid voxels (values < 0 or
    >= num_classes) is ``ignore_index``. A majority vote would hand almost every cell touching an
    adrenal gland or the oesophagus (a few voxels of a 16 x 16 cell) to background, so those
    organs would get no prototype at all and every pseudo-label of theirs would "disagree" with
    DINOv3. ``num_classes`` defaults to ``labels.max() + 1`` (one device sync); pass it.
    """
    if labels.dim() != 4:
        raise ValueError(f"labels must be (B, D, H, W), got shape {tuple(labels.shape)}")
    b, d, hh, ww = labels.shape
    s = int(stride)
    if s < 1 or hh % s or ww % s:
        raise ValueError(f"H={hh} and W={ww} must be multiples of the token stride {stride}")
    h, w = hh // s, ww // s
    lab = labels.long()
    k = int(num_classes) if num_classes is not None else max(int(lab.max().item()) + 1 if lab.numel() else 1, 1)
    slot = torch.where((lab >= 0) & (lab < k), lab, torch.full_like(lab, k))  # slot k = no vote
    cells = slot.reshape(b, d, h, s, w, s).permute(0, 1, 2, 4, 3, 5).reshape(-1, s * s)
    n_cells = cells.shape[0]
    cell_id = torch.arange(n_cells, device=lab.device).unsqueeze(1)
    counts = torch.bincount((cell_id * (k + 1) + cells).reshape(-1), minlength=n_cells * (k + 1))
    counts = counts.view(n_cells, k + 1)[:, :k]  # (cells, K) per-class voxel counts
    has_any = counts.sum(-1) > 0
    if k > 1:
        fg = counts[:, 1:]
        out = torch.where(fg.sum(-1) > 0, fg.argmax(-1) + 1, torch.zeros_like(has_any, dtype=torch.long))
    else:
        out = torch.zeros(n_cells, dtype=torch.long, device=lab.device)
    out = torch.where(has_any, out, torch.full_like(out, ignore_index))
    return out.view(b, d, h, w)


@torch.no_grad()
def class_prototypes(
    teacher_tokens: torch.Tensor,
    labels_on_grid: torch.Tensor,
    num_classes: int,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean of L2-normalised teacher tokens, re-normalised: p_c (METHOD §3).

    Args:
        teacher_tokens: (B, C_t, D, h, w); all-zero (padding) tokens are skipped.
        labels_on_grid: (B, D, h, w) long, -1 (or any value outside [0, K)) = ignore;
            see :func:`labels_to_token_grid`.
        num_classes: K.
        reduce: sums a tensor across data-parallel ranks (DDP), so every rank gets the
            prototypes of the global batch and the banks stay identical; None = this batch only.

    Returns:
        protos (K, C_t) float32 unit vectors (zeros for absent classes), present (K,) bool.
    """
    t = _tokens_last(teacher_tokens.detach().float())
    if tuple(labels_on_grid.shape) != tuple(t.shape[:-1]):
        raise ValueError(
            f"labels_on_grid must be (B, D, h, w) = {tuple(t.shape[:-1])}, got {tuple(labels_on_grid.shape)}"
        )
    lab = labels_on_grid.to(t.device).long()
    keep = (lab >= 0) & (lab < num_classes) & (t.abs().sum(-1) > 0)
    tok = F.normalize(t[keep], dim=-1)
    cls = lab[keep]
    sums = torch.zeros(num_classes, t.shape[-1] + 1, device=t.device)  # last column: token count
    sums[:, :-1].index_add_(0, cls, tok)
    sums[:, -1] = torch.bincount(cls, minlength=num_classes).to(sums.dtype)
    if reduce is not None:
        sums = reduce(sums)
    sums, counts = sums[:, :-1], sums[:, -1]
    present = counts > 0
    return F.normalize(sums, dim=-1), present


class PrototypeBank:
    """EMA class prototypes from labeled batches: p_c <- m p_c + (1 - m) p_c(batch), re-normalised.

    A class seen for the first time takes the batch prototype directly. Classes never seen stay
    absent, and :func:`prototype_agreement_weights` never judges a pseudo-label against a missing
    prototype. Tensors live on the device of the first update; ``state_dict`` for resume.
    """

    def __init__(self, num_classes: int, dim: int, momentum: float = 0.9) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"PrototypeBank momentum must be in [0, 1), got {momentum}")
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.momentum = float(momentum)
        self.prototypes = torch.zeros(self.num_classes, self.dim)
        self.present = torch.zeros(self.num_classes, dtype=torch.bool)

    @torch.no_grad()
    def update(self, protos: torch.Tensor, present: torch.Tensor) -> None:
        """Blend in batch prototypes (K, C_t) for the classes marked ``present`` (K,)."""
        if tuple(protos.shape) != (self.num_classes, self.dim):
            raise ValueError(f"protos must be ({self.num_classes}, {self.dim}), got {tuple(protos.shape)}")
        device = protos.device
        self.prototypes = self.prototypes.to(device)
        self.present = self.present.to(device)
        new = F.normalize(protos.float(), dim=-1)
        present = present.to(device).bool()
        blended = F.normalize(self.momentum * self.prototypes + (1.0 - self.momentum) * new, dim=-1)
        updated = torch.where(self.present.unsqueeze(1), blended, new)
        self.prototypes = torch.where(present.unsqueeze(1), updated, self.prototypes)
        self.present = self.present | present

    def update_from_batch(self, teacher_tokens: torch.Tensor, labels_on_grid: torch.Tensor, reduce=None) -> None:
        """``update(*class_prototypes(teacher_tokens, labels_on_grid, K, reduce))`` for a labeled batch."""
        self.update(*class_prototypes(teacher_tokens, labels_on_grid, self.num_classes, reduce))

    def state_dict(self) -> dict:
        return {
            "prototypes": self.prototypes.detach().cpu().clone(),
            "present": self.present.detach().cpu().clone(),
            "momentum": self.momentum,
        }

    def load_state_dict(self, state: dict) -> None:
        protos = state["prototypes"]
        if tuple(protos.shape) != (self.num_classes, self.dim):
            raise ValueError(
                f"checkpoint prototypes are {tuple(protos.shape)}, this bank expects "
                f"({self.num_classes}, {self.dim}); the class list or teacher changed"
            )
        self.prototypes = protos.float().clone()
        self.present = state["present"].bool().clone()
        self.momentum = float(state.get("momentum", self.momentum))


@torch.no_grad()
def prototype_agreement_weights(
    teacher_tokens: torch.Tensor,
    prototypes: torch.Tensor,
    present: torch.Tensor,
    pseudo_labels: torch.Tensor,
    stride: int,
    *,
    disagree_weight: float = 0.3,
    temperature: float | None = 0.1,
) -> torch.Tensor:
    """Voxel loss weights (B, D, H, W) from DINOv3 prototype agreement with the pseudo-labels.

    For each voxel v with pseudo class y, take the teacher token of its cell and its cosine
    similarity to every present prototype. With ``nearest = argmax_c cos_c``:

    * ``temperature=None`` (hard): weight 1 if y == nearest else ``disagree_weight``.
    * ``temperature=T`` (soft, default): weight =
      ``disagree_weight + (1 - disagree_weight) * q_y / max_c q_c`` with
      ``q = softmax(cos / T)`` over present prototypes, i.e. ``exp((cos_y - cos_max) / T)``.
      Exactly 1 where DINOv3's nearest class is y, strictly lower wherever it disagrees,
      falling towards ``disagree_weight`` as the pseudo class gets farther than the nearest one.

    Background pseudo-labels are judged too: a voxel the student calls background inside a token
    that DINOv3 puts nearest an organ prototype loses weight, which is how a collapsing minority
    organ is protected. No evidence means full weight 1: a pseudo class without a prototype,
    padding tokens (all zero), and labels outside [0, K).

    Args:
        teacher_tokens: (B, C_t, D, h, w); prototypes: (K, C_t); present: (K,) bool;
        pseudo_labels: (B, D, H, W) long with H = h * stride, W = w * stride.
    """
    if not 0.0 <= disagree_weight <= 1.0:
        raise ValueError(f"disagree_weight must be in [0, 1], got {disagree_weight}")
    if temperature is not None and temperature <= 0:
        raise ValueError(f"temperature must be > 0 or None, got {temperature}")
    t = _tokens_last(teacher_tokens.detach().float())  # (B, D, h, w, C)
    b, d, h, w, _ = t.shape
    s = int(stride)
    if tuple(pseudo_labels.shape) != (b, d, h * s, w * s):
        raise ValueError(
            f"pseudo_labels must be (B, D, h*stride, w*stride) = {(b, d, h * s, w * s)}, "
            f"got {tuple(pseudo_labels.shape)}"
        )
    protos = F.normalize(prototypes.to(t.device).float(), dim=-1)
    k = protos.shape[0]
    present = present.to(t.device).bool()
    ones = torch.ones(pseudo_labels.shape, device=t.device)
    if not bool(present.any()):
        return ones
    tok_valid = t.abs().sum(-1) > 0
    cos = F.normalize(t, dim=-1) @ protos.T  # (B, D, h, w, K)
    cos = cos.masked_fill(~present, float("-inf"))
    cos_max, nearest = cos.max(-1)

    lab = pseudo_labels.to(t.device).long()
    lab_ok = (lab >= 0) & (lab < k)
    safe = torch.where(lab_ok, lab, torch.zeros_like(lab))
    # Gather per-voxel values from the token grid without materialising (B, K, D, H, W).
    lab_cells = safe.reshape(b, d, h, s, w, s)
    cos_cells = cos.reshape(b, d, h, 1, w, 1, k).expand(b, d, h, s, w, s, k)
    cos_y = torch.gather(cos_cells, -1, lab_cells.unsqueeze(-1)).squeeze(-1)
    cos_top = cos_max.reshape(b, d, h, 1, w, 1).expand(b, d, h, s, w, s)
    near = nearest.reshape(b, d, h, 1, w, 1).expand(b, d, h, s, w, s)
    valid_tok = tok_valid.reshape(b, d, h, 1, w, 1).expand(b, d, h, s, w, s)

    if temperature is None:
        trust = (near == lab_cells).float()
    else:
        trust = torch.exp((cos_y - cos_top) / temperature)  # cos_y = -inf for absent -> handled below
        trust = torch.where(near == lab_cells, torch.ones_like(trust), trust)
    weight = disagree_weight + (1.0 - disagree_weight) * trust
    judged = valid_tok & lab_ok.reshape(b, d, h, s, w, s) & present[safe].reshape(b, d, h, s, w, s)
    weight = torch.where(judged, weight, torch.ones_like(weight))
    return weight.reshape(b, d, h * s, w * s)
