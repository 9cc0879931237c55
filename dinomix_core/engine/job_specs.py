"""What a training or prediction job is asked to do: plain, picklable data.

Apart from the jobs themselves (``jobs.py``, ``predict_job.py``) so that a front end can build
and send a job without importing torch: the GUI process never does (2.6 s of start-up and
500 MiB, measured with ``python -X importtime`` and ``ru_maxrss``); the worker process runs
the job. ``jobs`` re-exports both names.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainJobSpec:
    """What to train (plain data: picklable, JSON-able).

    ``config``: ``TrainConfig.to_dict()`` or only the fields to change from the defaults.
    ``teacher_weights``: None/"auto" (installed DINOv3 weights), "random" (an explicitly random
    teacher, reported as RANDOM TEACHER) or a weights file. ``teacher_overrides``: timm options
    of a smaller random ViT (tests, demos). ``resume``: continue the latest unfinished run.
    ``validation_case``: the labeled case to hold out (used with >= 3 labeled cases).
    ``device``: "cpu", "cuda" or None (CUDA when present). ``num_threads``: torch CPU threads
    while the job runs. ``cache_dir``: teacher-token cache (default: the project's cache).
    ``out_dir``: run folder (default: the project's ``runs/run-NNNN``). ``predict_first``: the
    unlabeled case predicted before the others (the one on screen: its overlay comes first).
    ``fast_predictions``: store the unlabeled cases' predictions with the fast first-overlay
    inference settings (``inference_settings.FAST``: windows touch instead of overlapping).
    """

    project_dir: str
    config: dict = field(default_factory=dict)
    teacher_weights: str | None = None
    teacher_overrides: dict | None = None
    resume: bool = False
    validation_case: str | None = None
    predict_unlabeled: bool = True
    device: str | None = None
    num_threads: int | None = None
    cache_dir: str | None = None
    out_dir: str | None = None
    predict_first: str | None = None
    fast_predictions: bool = False


@dataclass
class PredictJobSpec:
    """What to predict: ``image_path`` (a CT file or DICOM folder), or ``project_dir`` + ``case_id``.

    ``store``: keep the result as a ``model`` revision of the run that wrote ``checkpoint``
    (project case only). ``tta``: average over in-plane mirrored copies (4x the time).
    ``fast``: the fast-first-overlay settings (``inference_settings.FAST``: fewer windows).
    ``postprocess``: mask clean-up, ``auto`` (what the checkpoint decided), ``largest`` or ``off``.
    """

    checkpoint: str
    image_path: str | None = None
    project_dir: str | None = None
    case_id: str | None = None
    store: bool = False
    device: str | None = None
    num_threads: int | None = None
    tta: bool = False
    fast: bool = False
    postprocess: str = "auto"
