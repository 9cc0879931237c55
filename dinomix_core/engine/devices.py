"""The compute device a command asked for, checked before anything slow starts.

Why: ``--device cuda`` on a machine without a usable GPU used to end in torch's
"Found no NVIDIA driver" traceback, after the model or the cases had been loaded.
"""

from __future__ import annotations

from dinomix_core.io.errors import DinomixInputError


def resolve_device(name: str | None, *, option: str = "--device"):
    """``name`` ("cpu", "cuda", "cuda:N" or None/"auto" = CUDA when present) as a torch.device.

    Raises :class:`DinomixInputError` when CUDA is asked for and none is usable, or the GPU
    index does not exist; ``option`` is how the user spelled the setting.
    """
    import torch

    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise DinomixInputError(None, f"{option} {name}: not a device.", "use cpu or cuda, or leave it out.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = "built with CUDA" if torch.backends.cuda.is_built() else "built without CUDA"
            raise DinomixInputError(None, f"{option} {name}: no usable NVIDIA GPU here (torch {torch.__version__}, "
                                    f"{built}, no driver or no device).",
                                    f"pass {option} cpu, or leave {option} out to use CUDA when present.")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DinomixInputError(None, f"{option} {name}: this machine has {count} GPU(s) (cuda:0 .. cuda:{count - 1}).",
                                    "choose an existing GPU index.")
    elif device.type != "cpu":
        raise DinomixInputError(None, f"{option} {name}: only cpu and cuda are supported.", "use cpu or cuda.")
    return device
