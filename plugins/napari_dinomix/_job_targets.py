"""Worker-process entry points of the plugin that are more than one engine call (Qt-free).

``predict_cases`` runs the engine's prediction job for several project cases in ONE worker
process, so predicting all unlabeled cases pays the process start and the model load once
per case only in the engine, not a new process (2-5 s of imports here) per case. Each stored
prediction is announced with a small event; the GUI then reads it from the project, so the
label volumes never cross the pipe.
"""

from __future__ import annotations

from dataclasses import dataclass

from dinomix_core.engine.events import FinishedEvent, emit_all
from dinomix_core.engine.jobs import run_predict_job


@dataclass(frozen=True)
class CasePredicted:
    """One case predicted and stored as a ``model`` revision."""

    case_id: str
    revision_id: int | None
    score: float
    teacher_note: str = ""


def predict_cases(specs, callbacks=(), cancel=None):
    """Run ``run_predict_job`` for each PredictJobSpec in ``specs``; stops at the first failure or cancel."""
    callbacks = list(callbacks)
    done = 0
    for spec in specs:
        result = run_predict_job(spec, callbacks, cancel)
        if isinstance(result, FinishedEvent):
            if result.status == "cancelled" or done == 0:
                return result
            return FinishedEvent(result.status, f"{done} of {len(specs)} case(s) predicted; then: {result.message}",
                                 error=result.error)
        done += 1
        emit_all(callbacks, CasePredicted(result.case_id or spec.case_id, result.revision_id, float(result.score),
                                          result.teacher_note))
    return FinishedEvent("completed", f"{done} case(s) predicted and stored")


def add_teacher_weights(path: str, callbacks=(), cancel=None) -> str:
    """``dinomix weights add PATH`` for the Train panel: check and install a DINOv3 weight file.

    Run in the worker process: reading the tensors imports torch and timm, which the GUI
    process never does, and hashing (~1 GiB/s) and copying a 1.2 GB ViT-L file takes seconds. Returns the
    installed path; a wrong file is the engine's one-line error.
    """
    from dinomix_core.models.weights import add_weights

    return str(add_weights(path))
