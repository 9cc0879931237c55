"""Networks: students chosen by name (3D V-Net / U-Net, slice-wise 2D and 2.5D U-Nets) and the frozen
DINOv3 teacher with its local weight files. Floor 1: depends on ``dinomix_core.io`` only."""

import importlib

# Imported on first use (PEP 562), so that ``dinomix_core.models.weights`` can list weight files
# without torch: the GUI process never imports it (2.6 s of start-up and 500 MiB, measured with
# ``python -X importtime`` and ``ru_maxrss``). A name from a module that needs torch loads the
# built-in students first, as importing this package used to (a test that copies the registry
# then holds all of them); the weight-file and error names stay torch-free.
_TORCH_FREE = ("weights", "errors")
_LAZY = {
    "DEFAULT_TEACHER": "_dinov3", "teacher_archs": "_dinov3",
    "create_student": "_registry", "list_students": "_registry", "register_student": "_registry",
    "student_from_config": "_registry", "student_options": "_registry",
    "ChecksumMismatchError": "errors", "MissingWeightsError": "errors", "WeightsFileError": "errors",
    "DinoTeacher": "teacher", "build_teacher": "teacher",
    "UNet2d": "unet2d", "UNet3d": "unet3d",
    "add_weights": "weights", "find_weights": "weights", "list_weights": "weights", "user_weights_dir": "weights",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _LAZY[name] not in _TORCH_FREE:
        from dinomix_core.models._registry import register_builtin_students

        register_builtin_students()
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_TEACHER",
    "ChecksumMismatchError",
    "DinoTeacher",
    "MissingWeightsError",
    "UNet2d",
    "UNet3d",
    "WeightsFileError",
    "add_weights",
    "build_teacher",
    "create_student",
    "find_weights",
    "list_students",
    "list_weights",
    "register_student",
    "student_from_config",
    "student_options",
    "teacher_archs",
    "user_weights_dir",
]
