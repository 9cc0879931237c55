"""timm's DINOv3 ViTs: which names exist, how to build one, how a checkpoint maps onto it.

Conversion of Meta's key names (``storage_tokens``, ``ls1.gamma``, fused ``qkv.bias``, ...)
is timm's own ``checkpoint_filter_fn`` of the model's module, so we follow timm when it learns
new layouts. We call it ourselves on a state dict we read with ``weights_only=True`` rather
than through ``create_model(pretrained=True)``, so that one safe reader, one strict load and
one set of error messages cover every file.
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where a model or tensor is made: listing names needs none of it
    import torch
    from torch import nn

from dinomix_core.io.errors import DinomixInputError
from dinomix_core.models.errors import WeightsFileError

DEFAULT_TEACHER = "vit_small_patch16_dinov3"
#: The weights trained on natural images (ImageNet normalisation): the ones looked for by default.
DEFAULT_TAG = "lvd1689m"
QKVB = "_qkvb"

_SHOWN_KEYS = 6


def _timm():
    """timm, imported on first use: with torchvision and torch._dynamo it took 3.6 s, which
    `dinomix predict` (no teacher) paid at start-up before (python -X importtime)."""
    import timm

    return timm


def teacher_archs() -> list[str]:
    """timm architecture names usable as teachers (DINOv3 ViTs with 16-pixel patches)."""
    return sorted(_timm().list_models("vit_*_patch16_dinov3*"))


def check_arch(name: str) -> str:
    """Return ``name`` if it is a known DINOv3 ViT, else an input error listing the choices."""
    if name not in teacher_archs():
        raise DinomixInputError(
            None,
            f"unknown teacher {name!r}.",
            f"choose one of: {', '.join(teacher_archs())}.",
        )
    return name


def pretrained_tags(name: str) -> list[str]:
    """Weight tags timm knows for ``name`` (e.g. ``lvd1689m``, ``sat493m``)."""
    return [p.split(".", 1)[1] for p in _timm().list_pretrained(f"{name}.*")]


def default_tag(name: str) -> str:
    """The weights used by default for ``name``: ``lvd1689m`` where timm has them, else timm's first."""
    tags = pretrained_tags(name.removesuffix(QKVB)) + pretrained_tags(name)
    return DEFAULT_TAG if DEFAULT_TAG in tags or not tags else tags[0]


def normalisation(name: str, tag: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Input (mean, std) the weights ``name.tag`` were trained with (timm's pretrained cfg).

    An unknown or missing tag means the default weights (:func:`default_tag`).
    """
    tags = pretrained_tags(name)
    chosen = tag if tag in tags else default_tag(name)
    cfg = _timm().models.get_pretrained_cfg(f"{name}.{chosen}" if chosen in tags else name)
    return tuple(cfg.mean), tuple(cfg.std)


def create_vit(name: str, *, device: Any = None, **overrides: Any) -> nn.Module:
    """A randomly initialised timm DINOv3 ViT; ``overrides`` shrink it (depth, embed_dim, ...)."""
    check_arch(name)
    if device is not None:
        import torch

        with torch.device(device):
            return _timm().create_model(name, pretrained=False, **overrides)
    return _timm().create_model(name, pretrained=False, **overrides)


def _filter_fn(model: nn.Module):
    module = importlib.import_module(type(model).__module__)
    return getattr(module, "checkpoint_filter_fn", None)


def _is_meta_layout(state_dict: dict[str, torch.Tensor]) -> bool:
    return "storage_tokens" in state_dict


def _drop_zero_biases(state_dict: dict[str, torch.Tensor], model: nn.Module, path: os.PathLike, name: str) -> dict[str, torch.Tensor]:
    """Meta checkpoints carry a fused qkv bias; timm's bias-free variants have no place for it.

    Dropping it is exact only while its q and v parts are zero (DINOv3 masks the k part
    itself). Refuse rather than silently change the teacher when they are not; otherwise
    remove those entries, as timm's filter would (it prints a line for each).
    """
    params = dict(model.named_parameters())
    kept = dict(state_dict)
    for key, value in state_dict.items():
        if not key.endswith("attn.qkv.bias") or key.replace("qkv.bias", "q_bias") in params:
            continue
        q, _, v = value.float().chunk(3, dim=-1)
        if bool(q.any()) or bool(v.any()):
            raise WeightsFileError(
                path,
                f"holds non-zero attention biases ({key}), which teacher {name!r} has no parameters for.",
                f"use the teacher {name + QKVB!r}, which keeps them.",
            )
        del kept[key]
    return kept


def to_timm_state_dict(
    state_dict: dict[str, torch.Tensor], model: nn.Module, path: os.PathLike, name: str
) -> dict[str, torch.Tensor]:
    """Map a checkpoint (Meta or timm key names) onto ``model``'s key names."""
    if _is_meta_layout(state_dict):
        state_dict = _drop_zero_biases(state_dict, model, path, name)
    filter_fn = _filter_fn(model)
    if filter_fn is None:
        return dict(state_dict)
    try:
        return filter_fn(dict(state_dict), model)
    except Exception as exc:  # the filter assumes a sane checkpoint; any failure means it is not one
        raise WeightsFileError(
            path,
            f"is not a DINOv3 checkpoint timm can convert ({type(exc).__name__}: {exc}).",
            "use Meta's original dinov3_*.pth file or timm's model.safetensors.",
        ) from exc


def mismatches(state_dict: dict[str, torch.Tensor], model: nn.Module) -> list[str]:
    """Human-readable differences between a (timm-named) state dict and ``model``'s own."""
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    if missing:
        problems.append(f"{len(missing)} missing tensor(s) ({', '.join(missing[:_SHOWN_KEYS])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s) ({', '.join(unexpected[:_SHOWN_KEYS])})")
    if wrong:
        shown = ", ".join(f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong[:_SHOWN_KEYS])
        problems.append(f"{len(wrong)} tensor(s) of the wrong shape ({shown})")
    return problems


def check_matches(state_dict: dict[str, torch.Tensor], model: nn.Module, path: os.PathLike, name: str) -> dict[str, torch.Tensor]:
    """Convert and check a checkpoint against ``model``; returns the timm-named state dict."""
    converted = to_timm_state_dict(state_dict, model, path, name)
    problems = mismatches(converted, model)
    if problems:
        raise WeightsFileError(
            path,
            f"does not fit teacher {name!r}: {'; '.join(problems)}.",
            "the file is for another DINOv3 size or not a DINOv3 backbone; pick the matching --teacher "
            "(see `dinomix weights list`) or re-download the file.",
        )
    return converted


def load_into(model: nn.Module, state_dict: dict[str, torch.Tensor], path: os.PathLike, name: str) -> None:
    """Strictly load a checkpoint (Meta or timm layout) into ``model``."""
    converted = check_matches(state_dict, model, path, name)
    model.load_state_dict(converted, strict=True)


@functools.lru_cache(maxsize=None)
def meta_model(name: str) -> nn.Module:
    """The full-size ``name`` on the meta device: shapes only, no memory; cached, never modify it."""
    return create_vit(name, device="meta")


def _size_of(name: str) -> tuple[int, int]:
    model = meta_model(name)
    return int(model.embed_dim), len(model.blocks)


def _size_in(state_dict: dict[str, torch.Tensor]) -> tuple[int, int] | None:
    token = state_dict.get("cls_token")
    if token is None:
        return None
    blocks = {k.split(".")[1] for k in state_dict if k.startswith("blocks.")}
    return int(token.shape[-1]), len(blocks)


def infer_arch(state_dict: dict[str, torch.Tensor], path: os.PathLike) -> str | None:
    """The full-size DINOv3 ViT whose tensors match this checkpoint exactly, if any.

    Candidates of the right width and depth are built on the meta device (shapes only, no
    memory) and compared tensor by tensor. Bias-free variants are tried first, so a Meta
    checkpoint with all-zero biases maps to the plain name.
    """
    size = _size_in(state_dict)
    names = sorted(teacher_archs(), key=lambda n: (n.endswith(QKVB), n))
    for name in names:
        if size is None or _size_of(name) != size:
            continue
        model = meta_model(name)
        try:
            converted = to_timm_state_dict(state_dict, model, path, name)
        except WeightsFileError:
            continue
        if not mismatches(converted, model):
            return name
    return None
