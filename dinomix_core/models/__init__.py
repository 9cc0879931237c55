"""Networks: students chosen by name (3D V-Net / U-Net, slice-wise 2D and 2.5D U-Nets) and the frozen
DINOv3 teacher with its local weight files. Floor 1: depends on ``dinomix_core.io`` only."""

from dinomix_core.models import unet2d as _unet2d  # noqa: F401  (registers unet2d, unet2.5d)
from dinomix_core.models import unet3d as _unet3d  # noqa: F401  (registers unet3d, vnet)
from dinomix_core.models._dinov3 import DEFAULT_TEACHER, teacher_archs
from dinomix_core.models._registry import (
    create_student,
    list_students,
    register_student,
    student_from_config,
    student_options,
)
from dinomix_core.models.errors import ChecksumMismatchError, MissingWeightsError, WeightsFileError
from dinomix_core.models.teacher import DinoTeacher, build_teacher
from dinomix_core.models.unet2d import UNet2d
from dinomix_core.models.unet3d import UNet3d
from dinomix_core.models.weights import add_weights, find_weights, list_weights, user_weights_dir

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
