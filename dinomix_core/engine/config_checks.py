"""Checks of a :class:`~dinomix_core.engine.config.TrainConfig` that run before any slow work.

Why: a bad value used to surface as a traceback deep in the patch sampler or the trainer,
after the teacher tokens of every case were computed (minutes), or not at all (``--steps 0``
wrote an untrained model; ``--lr nan`` trained on NaN; ``--depth 10`` built a 22 GB network
and was killed by the kernel). :func:`validate_config` raises one
:class:`~dinomix_core.io.errors.DinomixInputError` naming the setting, what is wrong and
which values work; the CLI and the job API (the GUI) both call it first.

Patch sizes are (z, y, x) voxels. A student down-samples every axis it pools by
``2**depth`` (``size_divisor``), so each side must be a multiple of that; y and x must also be
multiples of the teacher-token stride (voxels per DINOv3 token), and instance norm needs a
bottleneck of more than one voxel.
"""

from __future__ import annotations

import math
from typing import Mapping

from dinomix_core.io.errors import DinomixInputError

# Measured on CPU (float32, SGD, 2 threads): the peak memory of a training step is about this
# many float32 tensors of the size sum_k(channels_k * voxels_k) per patch of the batch; 20
# over-estimates the measured 16-19 (unet3d/unet2d, widths 8-16, depths 3-4) a little.
ACTIVATION_FACTOR = 20
AMP_ACTIVATION_SHARE = 0.6  # mixed precision on CUDA keeps most activations in float16
BASE_BYTES = 300 * 2**20  # torch, the cases' arrays and the token cache come on top; a floor


def _name(names: Mapping[str, str] | None, field: str) -> str:
    return (names or {}).get(field, field)


def _bad(names, field: str, value, problem: str, fix: str) -> DinomixInputError:
    return DinomixInputError(None, f"{_name(names, field)} {_show(value)}: {problem}", fix)


def _show(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def validate_config(config, *, device=None, names: Mapping[str, str] | None = None) -> None:
    """Raise :class:`DinomixInputError` for the first setting of ``config`` that cannot train.

    ``names`` maps config fields to what the user typed (``{"steps": "--steps"}`` for the CLI);
    ``device`` (a torch.device or its name), when given, adds the memory estimate check.
    """
    if not _is_int(config.steps) or config.steps < 1:
        raise _bad(names, "steps", config.steps, "training needs at least one step.", "ask for 1 step or more.")
    if config.lr is not None and (not _finite(config.lr) or config.lr <= 0):  # None: the optimizer's default
        raise _bad(names, "lr", config.lr, "the learning rate must be a finite number above 0.",
                   "use e.g. 0.03 with sgd or 3e-3 with adamw.")
    for field in ("lambda_u", "lambda_fkd", "weight_decay", "time_budget_s"):
        value = getattr(config, field)
        if not _finite(value) or value < 0:
            raise _bad(names, field, value, "must be a finite number of 0 or more.", "use 0 or a positive number.")
    for field, low in (("batch_labeled", 1), ("student_width", 1), ("student_depth", 1), ("token_stride", 1),
                       ("val_every", 0), ("checkpoint_every", 0)):
        value = getattr(config, field)
        if not _is_int(value) or value < low:
            raise _bad(names, field, value, f"must be a whole number of {low} or more.", f"use {max(low, 1)} or more.")
    if config.uses_unlabeled and (not _is_int(config.batch_unlabeled) or config.batch_unlabeled < 1):
        raise _bad(names, "batch_unlabeled", config.batch_unlabeled,
                   f"method {config.method!r} learns from unlabeled patches, so it needs at least 1 per batch.",
                   "use 1 or more, or method 'supervised'.")
    from dinomix_core.methods.pic import box_range_ok  # imports torch, as the student check below does

    for field in ("pic_box", "pic_box_z"):  # fractions of the patch side (pic_box_z: None = as pic_box)
        box = getattr(config, field, None)
        if box is not None and not box_range_ok(box):
            raise _bad(names, field, box, "the mixing box's side is a range of fractions of the patch side.",
                       "use two numbers with 0 < low <= high <= 1, e.g. [0.25, 0.5].")
    patch = tuple(config.patch_size)
    if len(patch) != 3 or any(not _is_int(p) or p < 1 for p in patch):
        raise _bad(names, "patch_size", patch, "a patch is 3 positive voxel counts (z, y, x).",
                   "use e.g. 64,128,128 (GPU) or 16,64,64 (CPU).")
    student = _meta_student(config, names)
    _check_patch_fits(config, student.size_divisor, names)
    if device is not None:
        _check_memory(config, student, device, names)


def _meta_student(config, names):
    """The student built on the meta device: its shape rule and parameter count, no memory."""
    import torch

    from dinomix_core.models import list_students
    from dinomix_core.models._registry import create_student

    if config.student not in list_students():
        raise _bad(names, "student", config.student, "is not a student architecture.",
                   f"choose one of {', '.join(list_students())}.")
    with torch.device("meta"):
        return create_student(config.student, num_classes=2, in_channels=1, width=config.student_width,
                              depth=config.student_depth, norm=config.student_norm)


def patch_divisors(config, size_divisor) -> tuple[int, int, int]:
    """What each patch side (z, y, x) must be a multiple of: the student's down-sampling, and
    the token stride in-plane."""
    stride = int(config.token_stride)
    dz, dy, dx = (int(d) for d in size_divisor)
    return dz, math.lcm(dy, stride), math.lcm(dx, stride)


def _nearest(patch, divisors) -> tuple[int, ...]:
    return tuple(max(d, int(round(p / d)) * d) for p, d in zip(patch, divisors))


def _deepest(config, patch, pooled: tuple[bool, bool, bool]) -> int:
    """The largest depth whose down-sampling divides ``patch`` and leaves more than one bottleneck voxel."""
    best = 0
    for depth in range(1, 16):
        div = tuple(2**depth if p else 1 for p in pooled)
        divisors = (div[0], math.lcm(div[1], config.token_stride), math.lcm(div[2], config.token_stride))
        if any(s % d for s, d in zip(patch, divisors)) or math.prod(s // d for s, d in zip(patch, div)) <= 1:
            break
        best = depth
    return best


def _check_patch_fits(config, size_divisor, names) -> None:
    patch = tuple(config.patch_size)
    divisors = patch_divisors(config, size_divisor)
    pooled = tuple(int(d) > 1 for d in size_divisor)
    bottleneck = math.prod(p // int(d) for p, d in zip(patch, size_divisor))
    if all(p % d == 0 for p, d in zip(patch, divisors)) and bottleneck > 1:
        return
    depth = config.student_depth
    rule = (f"the {config.student} student halves {'/'.join(a for a, p in zip('zyx', pooled) if p)} {depth} times "
            f"and y, x hold whole teacher tokens of {config.token_stride} voxels, so the sides (z, y, x) must be "
            f"multiples of {_show(divisors)}")
    if bottleneck <= 1 and all(p % d == 0 for p, d in zip(patch, divisors)):
        rule += ", and the deepest level needs more than one voxel"
    deepest = _deepest(config, patch, pooled)
    nearest = _nearest(patch, divisors)
    if math.prod(n // int(d) for n, d in zip(nearest, size_divisor)) <= 1:  # one bottleneck voxel: grow y
        nearest = (nearest[0], nearest[1] * 2, nearest[2])
    use_patch = f"{_name(names, 'patch_size')} {_show(nearest)}"
    use_depth = f"{_name(names, 'student_depth')} {deepest} or less (the deepest this patch allows)"
    if 1 <= deepest < depth and any(n > 2 * p for n, p in zip(nearest, patch)):
        fix = f"use {use_depth}, or a patch whose sides are multiples of {_show(divisors)}."
    elif 1 <= deepest < depth:
        fix = f"use {use_patch}, or {use_depth}."
    else:
        fix = f"use {use_patch} (the nearest size that works)."
    raise DinomixInputError(None, f"{_name(names, 'patch_size')} {_show(patch)} does not fit "
                            f"{_name(names, 'student_depth')} {depth}: {rule}.", fix)


def estimate_training_bytes(config, student) -> tuple[int, int]:
    """(bytes, parameter count): a rough peak memory of one training step of ``config``.

    Parameters (counted exactly on ``student``, a meta-device build) are held as weights,
    gradients, the EMA teacher and the optimiser's state; activations scale with
    sum over levels k of channels_k * voxels_k per patch (see ``ACTIVATION_FACTOR``).
    """
    params = sum(p.numel() for p in student.parameters())
    copies = 3 + (2 if config.optimizer == "adamw" else 1)  # weights, grads, EMA + optimiser state
    pooled = tuple(int(d) > 1 for d in student.size_divisor)
    voxels = math.prod(config.patch_size)
    per_patch = 0
    for k in range(config.student_depth + 1):
        shrink = 2 ** (k * sum(pooled))
        per_patch += config.student_width * 2**k * max(1, voxels // shrink)
    batch = config.batch_labeled + (config.batch_unlabeled if config.uses_unlabeled else 0)
    activations = 4 * ACTIVATION_FACTOR * batch * per_patch
    return int(BASE_BYTES + 4 * copies * params + activations), params


def available_bytes(device) -> tuple[int, str]:
    """(bytes, what) memory a training run on ``device`` may use: free GPU memory, else the
    system's available memory (MemAvailable)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free), f"GPU {device.index or 0} has"
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "this machine has"
    except OSError:
        pass
    import os

    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")), "this machine has"


def _check_memory(config, student, device, names) -> None:
    import torch

    need, params = estimate_training_bytes(config, student)
    device = torch.device(device)
    if device.type == "cuda" and config.amp:
        need = int(need * AMP_ACTIVATION_SHARE)
    have, where = available_bytes(device)
    if need <= have:
        return
    gib = 2**30
    raise DinomixInputError(
        None,
        f"this student ({config.student}, {_name(names, 'student_width')} {config.student_width}, "
        f"{_name(names, 'student_depth')} {config.student_depth}: {params / 1e6:.0f} M parameters) on "
        f"{_name(names, 'patch_size')} {_show(config.patch_size)} needs about {need / gib:.1f} GB to train, and "
        f"{where} {have / gib:.1f} GB available.",
        f"choose a smaller {_name(names, 'patch_size')}, {_name(names, 'student_width')} or "
        f"{_name(names, 'student_depth')}, or smaller batches.",
    )


def check_split(config, n_labeled: int, n_unlabeled: int, where=None, *, labeled_option: str = "--labeled") -> None:
    """Refuse a labeled/unlabeled split ``config``'s method cannot train on, before any case loads.

    ``where``: the data set or project the cases come from (named in the message).
    """
    if n_labeled < 1:
        raise DinomixInputError(where, "no case is labeled, and every method needs at least one labeled case.",
                                f"choose 1 or more labeled cases ({labeled_option}).")
    if config.uses_unlabeled and n_unlabeled < 1:
        raise DinomixInputError(where, f"every one of its {n_labeled} training case(s) is labeled, and method "
                                f"{config.method!r} also learns from unlabeled scans.",
                                f"label fewer cases with {labeled_option}, add unlabeled scans, or use method "
                                "'supervised'.")
