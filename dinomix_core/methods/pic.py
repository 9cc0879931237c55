"""PIC: Progressive Imbalance-aware CutMix between labeled and unlabeled patches (METHOD §4).

Shapes (axis order z, y, x):
    images        (B, 1, D, H, W)   float
    targets       (B, D, H, W)      long (ground truth, or teacher pseudo-labels)
    masks/weights (B, D, H, W)      bool / float
    tokens        (B, C_t, D, h, w) cached DINOv3 tokens, h = H / stride, w = W / stride
    boxes         (z0, z1, y0, y1, x0, x1) voxel indices, end exclusive; y and x bounds are
                  multiples of the token stride so the box maps exactly onto the token grid
    class vectors (K,)              indexed by class value, 0 = background

Randomness comes only from the ``torch.Generator`` passed in (a CPU generator), so a seeded run
mixes the same boxes again.
"""

from __future__ import annotations

import torch

__all__ = [
    "ClassFrequency",
    "curriculum_alpha",
    "class_sampling_probs",
    "sample_class",
    "class_loss_weights",
    "box_range_ok",
    "sample_box",
    "bidirectional_cutmix",
    "PICCurriculum",
]

Box = tuple[int, int, int, int, int, int]


def _class_counts(labels: torch.Tensor, num_classes: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """float64 CPU (K,) voxel counts of values in [0, K) (where ``mask`` is True)."""
    lab = labels.long()
    keep = (lab >= 0) & (lab < num_classes)
    if mask is not None:
        if tuple(mask.shape) != tuple(lab.shape):
            raise ValueError(f"mask shape {tuple(mask.shape)} must equal labels shape {tuple(lab.shape)}")
        keep = keep & mask.to(lab.device).bool()
    slot = torch.where(keep, lab, torch.full_like(lab, num_classes))
    counts = torch.bincount(slot.reshape(-1), minlength=num_classes + 1)[:num_classes]
    return counts.to("cpu", torch.float64)


class ClassFrequency:
    """Class voxel frequencies f_c: labeled counts, then an EMA of confident pseudo-label counts.

    ``update_labeled`` accumulates ground-truth voxel counts; until the first pseudo update the
    frequencies are exactly the normalised labeled counts. Each ``update_pseudo`` does
    ``f <- m f + (1 - m) f_batch`` with ``f_batch`` the normalised counts of confident
    pseudo-labels (an empty mask changes nothing). Labeled batches seen after that enter the same
    EMA. ``.freqs`` is floored at ``eps`` and renormalised, so 1/f_c is always finite: an organ
    not seen yet gets the largest (floored) rarity instead of a division by zero.
    Kept on the CPU in float64 (K numbers).
    """

    def __init__(self, num_classes: int, momentum: float = 0.99, *, eps: float = 1e-6) -> None:
        if num_classes < 2:
            raise ValueError(f"need at least background + one class, got num_classes={num_classes}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.num_classes = int(num_classes)
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.labeled_counts = torch.zeros(self.num_classes, dtype=torch.float64)
        self._f: torch.Tensor | None = None
        self.pseudo_updates = 0

    def _blend(self, batch_counts: torch.Tensor) -> None:
        total = float(batch_counts.sum())
        if total <= 0:
            return
        batch_f = batch_counts / total
        if self._f is None:
            self._f = batch_f
        else:
            self._f = self.momentum * self._f + (1.0 - self.momentum) * batch_f

    def update_labeled(self, labels: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Add ground-truth counts from ``labels`` (any shape, e.g. (D, H, W) or (B, D, H, W))."""
        counts = _class_counts(labels, self.num_classes, valid)
        if self.pseudo_updates == 0:
            self.labeled_counts += counts
            total = float(self.labeled_counts.sum())
            if total > 0:
                self._f = self.labeled_counts / total
        else:
            self._blend(counts)

    def update_pseudo(self, pseudo: torch.Tensor, mask: torch.Tensor) -> None:
        """EMA step with the counts of ``pseudo`` labels where ``mask`` (confident) is True."""
        counts = _class_counts(pseudo, self.num_classes, mask)
        if float(counts.sum()) <= 0:
            return
        self._blend(counts)
        self.pseudo_updates += 1

    def update_pseudo_counts(self, counts: torch.Tensor) -> None:
        """EMA step with ready-made confident pseudo-label counts (K,), e.g. summed over DDP ranks
        so that every rank keeps the same frequencies."""
        counts = counts.detach().to("cpu", torch.float64).reshape(-1)
        if counts.numel() != self.num_classes:
            raise ValueError(f"expected {self.num_classes} counts, got {counts.numel()}")
        if float(counts.sum()) <= 0:
            return
        self._blend(counts)
        self.pseudo_updates += 1

    @property
    def freqs(self) -> torch.Tensor:
        """(K,) float64 frequencies summing to 1, each >= ~eps (uniform before any update)."""
        if self._f is None:
            return torch.full((self.num_classes,), 1.0 / self.num_classes, dtype=torch.float64)
        f = self._f.clamp_min(self.eps)
        return f / f.sum()

    def state_dict(self) -> dict:
        return {
            "num_classes": self.num_classes,
            "momentum": self.momentum,
            "eps": self.eps,
            "labeled_counts": self.labeled_counts.clone(),
            "f": None if self._f is None else self._f.clone(),
            "pseudo_updates": self.pseudo_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        if int(state["num_classes"]) != self.num_classes:
            raise ValueError(
                f"checkpoint has {state['num_classes']} classes, this run has {self.num_classes}; "
                "the label map changed, start a new run"
            )
        self.momentum = float(state["momentum"])
        self.eps = float(state["eps"])
        self.labeled_counts = state["labeled_counts"].to("cpu", torch.float64).clone()  # CPU even if mapped to a GPU
        self._f = None if state["f"] is None else state["f"].to("cpu", torch.float64).clone()
        self.pseudo_updates = int(state["pseudo_updates"])


def curriculum_alpha(t: float, gamma: float = 1.0) -> float:
    """alpha(t) = (1 - clip(t, 0, 1))^gamma: 1 (tail-focused) at the start, 0 (uniform) at the end."""
    t = min(max(float(t), 0.0), 1.0)
    return (1.0 - t) ** gamma


def class_sampling_probs(
    freqs: torch.Tensor,
    alpha: float,
    *,
    present: torch.Tensor | None = None,
    include_background: bool = False,
) -> torch.Tensor:
    """p_c proportional to (1 / f_c)^alpha over eligible classes; float64 (K,), zeros elsewhere.

    Eligible: foreground (unless ``include_background``) and ``present`` (K,) bool when given.
    All zeros when nothing is eligible (the caller then cuts a box at a random place).
    """
    f = freqs.detach().to("cpu", torch.float64).clamp_min(torch.finfo(torch.float64).tiny)
    eligible = torch.ones_like(f, dtype=torch.bool)
    if not include_background:
        eligible[0] = False
    if present is not None:
        eligible &= present.detach().to("cpu").bool()
    # log-space keeps (1/f)^alpha finite for tiny floored frequencies.
    logits = -alpha * f.log()
    logits = torch.where(eligible, logits, torch.full_like(logits, float("-inf")))
    if not bool(eligible.any()):
        return torch.zeros_like(f)
    return torch.softmax(logits, dim=0)


def sample_class(probs: torch.Tensor, present: torch.Tensor | None, generator: torch.Generator) -> int | None:
    """Draw one class from ``probs`` (K,) restricted to ``present`` (K,) bool and renormalised.

    Returns None when no class with positive probability is present.
    """
    p = probs.detach().to("cpu", torch.float64)
    if present is not None:
        p = p * present.detach().to("cpu").to(torch.float64)
    if float(p.sum()) <= 0:
        return None
    return int(torch.multinomial(p / p.sum(), 1, generator=generator).item())


def class_loss_weights(freqs: torch.Tensor, beta: float = 0.5, *, max_ratio: float = 50.0) -> torch.Tensor:
    """Class weights proportional to (1/f_c)^beta, capped, normalised to mean 1; float32 (K,).

    The cap ``w_c <= max_ratio * min_c w_c`` bounds how much harder the rarest class pulls than the
    most frequent one (with beta = 0.5, background at f ~ 0.9 against an adrenal gland at ~1e-4 is
    a ratio of ~95, and an organ never seen, floored at 1e-6, ~950): uncapped, weighted CE turns
    into massive over-segmentation of the tail. Order between classes is preserved.
    """
    if max_ratio < 1.0:
        raise ValueError(f"max_ratio must be >= 1, got {max_ratio}")
    f = freqs.detach().to("cpu", torch.float64).clamp_min(torch.finfo(torch.float64).tiny)
    w = f.pow(-beta)
    w = torch.minimum(w, max_ratio * w.min())
    return (w / w.mean()).float()


def box_range_ok(fractions) -> bool:
    """Whether ``fractions`` is a (low, high) range of box sides as fractions of the patch side."""
    try:
        lo, hi = (float(v) for v in fractions)
    except (TypeError, ValueError):
        return False
    return 0.0 < lo <= hi <= 1.0


def sample_box(
    source_labels: torch.Tensor,
    cls: int | None,
    patch_shape: tuple[int, int, int],
    generator: torch.Generator,
    *,
    size_range: tuple[float, float] = (0.25, 0.5),
    stride: int = 1,
    z_range: tuple[float, float] | None = None,
) -> Box:
    """A random box (z0, z1, y0, y1, x0, x1) centred on a random voxel of class ``cls``.

    Args:
        source_labels: (D, H, W) labels of the source patch (-1 = not usable, e.g. an
            unconfident pseudo-label); must have shape ``patch_shape``.
        cls: class to centre on; None or absent from the source -> a uniformly random centre.
        patch_shape: (D, H, W) of the patch (source and destination share it).
        generator: CPU ``torch.Generator``.
        size_range: box side as a fraction of the patch side, drawn uniformly per axis.
        stride: in-plane token stride; y/x sizes and starts are multiples of it (z is per slice).
        z_range: the box depth's fraction of the patch depth, if not ``size_range``; (1, 1)
            pastes whole columns, so an organ never ends at a box face in z.

    The box is clipped to the patch by shifting, never by shrinking, and always contains the
    chosen voxel (within ``stride`` of the box centre in y/x, away from the patch border).
    """
    shape = tuple(int(v) for v in patch_shape)
    if tuple(source_labels.shape) != shape:
        raise ValueError(f"source_labels shape {tuple(source_labels.shape)} must equal patch_shape {shape}")
    for name, given in (("size_range", size_range), ("z_range", z_range)):
        if given is not None and not box_range_ok(given):
            raise ValueError(f"{name} must satisfy 0 < lo <= hi <= 1, got {given}")
    lo, hi = float(size_range[0]), float(size_range[1])
    s = int(stride)
    if s < 1 or shape[1] % s or shape[2] % s:
        raise ValueError(f"H={shape[1]} and W={shape[2]} must be multiples of the token stride {stride}")

    centre: list[int] | None = None
    if cls is not None:
        coords = torch.nonzero(source_labels == int(cls))
        if coords.shape[0] > 0:
            pick = int(torch.randint(coords.shape[0], (1,), generator=generator).item())
            centre = [int(v) for v in coords[pick].tolist()]
    if centre is None:
        centre = [int(torch.randint(n, (1,), generator=generator).item()) for n in shape]

    draws = torch.rand(3, generator=generator, dtype=torch.float64)
    fracs = (lo + (hi - lo) * draws).tolist()
    if z_range is not None:
        zlo, zhi = float(z_range[0]), float(z_range[1])
        fracs[0] = zlo + (zhi - zlo) * float(draws[0])
    box: list[int] = []
    for axis, (dim, c, frac) in enumerate(zip(shape, centre, fracs)):
        unit = 1 if axis == 0 else s
        units = dim // unit
        n = min(max(int(round(frac * dim / unit)), 1), units)
        start = min(max(c // unit - n // 2, 0), units - n)
        box += [start * unit, (start + n) * unit]
    return tuple(box)  # type: ignore[return-value]


def _present(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return _class_counts(labels, num_classes) > 0


def _item(side: dict[str, torch.Tensor | None], b: int) -> dict[str, torch.Tensor | None]:
    return {k: (v[b] if v is not None else None) for k, v in side.items()}


def _mix_one(
    dst: dict[str, torch.Tensor | None],
    src: dict[str, torch.Tensor | None],
    box: Box,
    stride: int,
    dst_is_labeled: bool,
) -> dict[str, torch.Tensor | None]:
    z0, z1, y0, y1, x0, x1 = box
    out: dict[str, torch.Tensor | None] = {}
    for key in ("image", "target", "valid", "weight"):
        v = dst[key].clone()
        v[..., z0:z1, y0:y1, x0:x1] = src[key][..., z0:z1, y0:y1, x0:x1].to(v.dtype)
        out[key] = v
    from_labeled = torch.full_like(dst["valid"], dst_is_labeled, dtype=torch.bool)
    from_labeled[z0:z1, y0:y1, x0:x1] = not dst_is_labeled
    out["from_labeled"] = from_labeled
    if dst["tokens"] is not None:
        tok = dst["tokens"].clone()
        ty0, ty1, tx0, tx1 = y0 // stride, y1 // stride, x0 // stride, x1 // stride
        tok[:, z0:z1, ty0:ty1, tx0:tx1] = src["tokens"][:, z0:z1, ty0:ty1, tx0:tx1].to(tok.dtype)
        out["tokens"] = tok
    else:
        out["tokens"] = None
    return out


def _unpack(batch: dict, *, labeled: bool, num_classes: int) -> dict[str, torch.Tensor | None]:
    name = "labeled" if labeled else "unlabeled"
    for key in ("image", "target"):
        if key not in batch:
            raise ValueError(f"the {name} batch needs key '{key}'")
    image, target = batch["image"], batch["target"].long()
    if image.dim() != 5 or tuple(target.shape) != (image.shape[0],) + tuple(image.shape[2:]):
        raise ValueError(
            f"{name} image must be (B, 1, D, H, W) and target (B, D, H, W); got "
            f"{tuple(image.shape)} and {tuple(target.shape)}"
        )
    in_range = (target >= 0) & (target < num_classes)
    if labeled:
        valid = batch.get("valid")
        valid = in_range if valid is None else valid.bool() & in_range
    else:
        if "confident" not in batch:
            raise ValueError("the unlabeled batch needs key 'confident' (the pseudo-label mask)")
        valid = batch["confident"].bool() & in_range
    weight = batch.get("weight")
    weight = torch.ones_like(target, dtype=torch.float32) if weight is None else weight.float()
    return {"image": image, "target": target, "valid": valid, "weight": weight, "tokens": batch.get("tokens")}


def bidirectional_cutmix(
    labeled: dict,
    unlabeled: dict,
    *,
    probs_t: torch.Tensor,
    generator: torch.Generator,
    stride: int,
    size_range: tuple[float, float] = (0.25, 0.5),
    z_range: tuple[float, float] | None = None,
) -> tuple[dict, dict]:
    """Cross-domain CutMix in both directions (METHOD §4).

    Args:
        labeled: {"image" (B_l, 1, D, H, W), "target" (B_l, D, H, W) ground truth,
            "tokens" (B_l, C_t, D, h, w) or None, optional "valid" (B_l, D, H, W) bool
            (default: target in [0, K)), optional "weight" (B_l, D, H, W) float}.
        unlabeled: {"image", "target" (pseudo-labels), "confident" (B_u, D, H, W) bool,
            "tokens" or None, optional "weight" (e.g. prototype agreement weights)}.
        probs_t: (K,) class sampling probabilities at the current progress, e.g.
            ``PICCurriculum.probs(t)``; K fixes the class range.
        generator: CPU ``torch.Generator``; stride: in-plane token stride;
        size_range: box side as a fraction of the patch side.
        z_range: box depth as a fraction of the patch depth (default: ``size_range``).

    Pair b of the unlabeled batch uses labeled item ``b % B_l`` (and vice versa), so unequal
    batch sizes work. Returns ``(mixed_u, mixed_l)``:

    * mixed_u: unlabeled context with a box of labeled voxels, centred on a ground-truth voxel of
      a class drawn from ``probs_t`` restricted to the classes present in that labeled patch;
    * mixed_l: labeled context with a box of unlabeled voxels, centred on a *confident*
      pseudo-label voxel of a class drawn from ``probs_t`` restricted to the confident classes.

    Each output dict has image, target (ground truth exactly where labeled voxels landed,
    pseudo-labels elsewhere), valid (labeled voxels: their validity; unlabeled voxels: their
    confidence), from_labeled (bool), weight (float voxel weights, mixed like the rest), tokens
    (mixed with the same box on the token grid, or None), boxes (list of boxes) and classes (the
    class each box was centred on, -1 when no eligible class was present and the box is random).
    Inputs are not modified.
    """
    num_classes = int(probs_t.shape[0])
    lab = _unpack(labeled, labeled=True, num_classes=num_classes)
    unl = _unpack(unlabeled, labeled=False, num_classes=num_classes)
    if tuple(lab["image"].shape[2:]) != tuple(unl["image"].shape[2:]):
        raise ValueError(
            f"labeled and unlabeled patches must have the same (D, H, W), got "
            f"{tuple(lab['image'].shape[2:])} and {tuple(unl['image'].shape[2:])}"
        )
    if (lab["tokens"] is None) != (unl["tokens"] is None):
        raise ValueError("tokens must be given for both the labeled and the unlabeled batch, or for neither")
    patch_shape = tuple(lab["image"].shape[2:])

    def source_labels(side: dict, b: int) -> torch.Tensor:
        return torch.where(side["valid"][b], side["target"][b], torch.full_like(side["target"][b], -1))

    def one_direction(dst: dict, src: dict, dst_is_labeled: bool) -> dict:
        n_dst, n_src = dst["image"].shape[0], src["image"].shape[0]
        items, boxes, classes = [], [], []
        for b in range(n_dst):
            sb = b % n_src
            src_labels = source_labels(src, sb)
            cls = sample_class(probs_t, _present(src_labels, num_classes), generator)
            box = sample_box(src_labels, cls, patch_shape, generator, size_range=size_range, stride=stride,
                             z_range=z_range)
            items.append(_mix_one(_item(dst, b), _item(src, sb), box, stride, dst_is_labeled))
            boxes.append(box)
            classes.append(-1 if cls is None else cls)
        out = {
            key: torch.stack([it[key] for it in items])
            for key in ("image", "target", "valid", "weight", "from_labeled")
        }
        out["tokens"] = torch.stack([it["tokens"] for it in items]) if dst["tokens"] is not None else None
        out["boxes"] = boxes
        out["classes"] = classes
        return out

    mixed_u = one_direction(unl, lab, dst_is_labeled=False)
    mixed_l = one_direction(lab, unl, dst_is_labeled=True)
    return mixed_u, mixed_l


class PICCurriculum:
    """The PIC schedule in one object: class frequencies + curriculum (gamma) + loss weights (beta).

    ``probs(t)`` gives the class sampling distribution at progress t in [0, 1];
    ``loss_weights()`` the class weights for the mixed-volume CE + Dice; ``state_dict`` /
    ``load_state_dict`` carry the frequencies across a resumed run.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        gamma: float = 1.0,
        beta: float = 0.5,
        momentum: float = 0.99,
        include_background: bool = False,
        max_weight_ratio: float = 50.0,
    ) -> None:
        self.frequency = ClassFrequency(num_classes, momentum=momentum)
        self.gamma = float(gamma)
        self.beta = float(beta)
        self.include_background = bool(include_background)
        self.max_weight_ratio = float(max_weight_ratio)

    @property
    def num_classes(self) -> int:
        return self.frequency.num_classes

    @property
    def freqs(self) -> torch.Tensor:
        return self.frequency.freqs

    def update_labeled(self, labels: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        self.frequency.update_labeled(labels, valid)

    def update_pseudo(self, pseudo: torch.Tensor, mask: torch.Tensor) -> None:
        self.frequency.update_pseudo(pseudo, mask)

    def alpha(self, t: float) -> float:
        return curriculum_alpha(t, self.gamma)

    def probs(self, t: float, present: torch.Tensor | None = None) -> torch.Tensor:
        """(K,) float64 class sampling probabilities at progress ``t``."""
        return class_sampling_probs(
            self.frequency.freqs, self.alpha(t), present=present, include_background=self.include_background
        )

    def loss_weights(self, t: float | None = None) -> torch.Tensor:
        """(K,) float32 class loss weights, mean 1; with progress ``t`` the exponent follows the
        curriculum too (beta * alpha(t)): tail-heavy early, uniform at the end."""
        beta = self.beta if t is None else self.beta * self.alpha(t)
        return class_loss_weights(self.frequency.freqs, beta, max_ratio=self.max_weight_ratio)

    def state_dict(self) -> dict:
        return {
            "frequency": self.frequency.state_dict(),
            "gamma": self.gamma,
            "beta": self.beta,
            "include_background": self.include_background,
            "max_weight_ratio": self.max_weight_ratio,
        }

    def load_state_dict(self, state: dict) -> None:
        self.frequency.load_state_dict(state["frequency"])
        self.gamma = float(state["gamma"])
        self.beta = float(state["beta"])
        self.include_background = bool(state["include_background"])
        self.max_weight_ratio = float(state["max_weight_ratio"])
