"""Model predictions of the open case put on screen, and their uncertainty overlay.

Part of the annotation session (``AnnotationSession`` mixes this in): it uses the session's
project, open case, layers, autosave and worker thread; apart so that the session module
keeps to opening, saving and closing cases. GUI thread only, as the session.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from dinomix_core.project.revisions import Revision, read_revision_file
from dinomix_core.project.runs import UNCERTAINTY_LEVELS, read_uncertainty_levels

from napari_dinomix._layers import LAYER_TAG, image_layer_data, retarget_layer


class PredictionsShown:
    """``show_prediction`` / ``show_prediction_soon`` and the uncertainty overlay of the open case."""

    def show_prediction_soon(self, case_id: str, revision_id: int, still_wanted: Callable[[int], bool] | None = None) -> None:
        """Read a stored prediction of the open case in a worker thread, then show it.

        For predictions the user did not ask for at that moment (a training run's, a batch
        prediction's): reading one of a full CT took 210 ms of the GUI thread (see
        ``_newest_only``). ``still_wanted(revision_id)`` is asked again when the read is done,
        on the GUI thread: whatever happened meanwhile (strokes, another case, a newer
        prediction) decides; a newer request replaces this one.
        """
        if case_id != self.case_id or self.project is None:
            return
        rev = self.project.revision(revision_id)
        uncertainty = self.project.prediction_uncertainty_file(rev.id) if self.uncertainty_wanted else None
        self._prediction_reader.request(_read_prediction, rev, uncertainty,
                                        tag=(self.project.root, case_id, rev.id, still_wanted))

    def _on_prediction_read(self, read, tag) -> None:
        root, case_id, revision_id, still_wanted = tag
        if self.project is None or self.project.root != root or case_id != self.case_id:
            return
        if still_wanted is None or still_wanted(revision_id):
            labels, uncertainty = read
            self.show_prediction(case_id, revision_id, labels=labels, uncertainty=uncertainty)

    def show_prediction(self, case_id: str, revision_id: int, *, labels=None, uncertainty=None) -> bool:
        """Put a stored model prediction of the open case on screen as an editable layer.

        The human layer, if any, is saved, locked and kept visible underneath; a layer holding
        nothing of the user's (an empty map, an unedited earlier prediction) shows the new
        prediction itself. Edits to the prediction become new drafts of the case.
        """
        if case_id != self.case_id or self.project is None:
            return False
        rev = self.project.revision(revision_id)
        if labels is None:  # else read already (show_prediction_soon), from the same revision
            labels = self.project.load_labels(rev.id)
        image = self.project.load_image(case_id) if self.image_layer is None else None
        if not self._flush_or_say_why():
            return False
        self._stop_autosave()
        old = self.labels_layer
        reference = image if image is not None else self.project.case(case_id).volume_like(labels.array)
        reuse = None
        if old is not None:
            if self._holds_nothing_of_the_users(old):
                reuse = old  # the layer shows the new prediction; the old one stays in the case's history
            else:
                old.editable = False
                old.opacity = 0.35
                old.name = f"{old.name} (locked)"
                self._locked_layers.append(old)
        self._show_labels(labels.array, self.project.require_label_map(), reference, prediction_name(rev), revision=rev,
                          reuse=reuse)
        if self.uncertainty_wanted:
            self.show_uncertainty(rev.id, visible=True, levels=uncertainty)
        else:
            self._drop_uncertainty()
        self.message.emit("info", f"Prediction of {case_id} shown ({revision_text(rev)}); edit it, then Accept.")
        return True

    def _holds_nothing_of_the_users(self, layer) -> bool:
        """An empty, never-saved map, or a stored model prediction shown unedited.

        Edits are flushed before this is asked: an edited prediction has become a human draft
        and the layer points at it, so it is locked and kept on screen. Replacing an unedited
        prediction in place spares the GUI thread a new layer (141-181 against 50-55 ms under
        software OpenGL, ``benchmarks.gui_step_cost``) and the layer list a locked copy per run.
        """
        revision_id = layer.metadata.get("dinomix_revision")
        if revision_id is None:
            return not np.any(layer.data)
        return self.project.revision(revision_id).kind == "model"

    def show_uncertainty(self, revision_id: int, *, visible: bool = True, levels: np.ndarray | None = None) -> bool:
        """The per-voxel uncertainty of a stored prediction as an optional overlay.

        Shown as stored, one byte per voxel (0..255 for 0..1): no float copy, and a full CT's
        map costs as much as its labels. ``levels``: that map when already read
        (``show_prediction_soon`` reads it in its worker thread); else it is read here. The
        previous overlay's layer takes the new map (the same case's grid): building one cost
        80 ms of the GUI thread on a 512 x 512 x 300 CT (``benchmarks.gui_step_cost``).
        """
        if self.project is None or self.case_id is None:
            return False
        if levels is None:
            levels = self.project.prediction_uncertainty_levels(revision_id)
        if levels is None:
            return False
        case = self.project.case(self.case_id)
        data, kwargs, _ = image_layer_data(case.volume_like(levels), name=f"{self.case_id} uncertainty")
        kwargs.update(colormap="inferno", contrast_limits=(0, UNCERTAINTY_LEVELS), blending="additive", opacity=0.6,
                      visible=visible)
        kwargs.setdefault("metadata", {})[LAYER_TAG] = "uncertainty"
        old = self.uncertainty_layer
        if old is not None and old in self.viewer.layers and old.data.dtype == data.dtype:
            retarget_layer(old, data, kwargs)  # the previous prediction's overlay takes the new map
            old.visible = visible
            return True
        self._drop_uncertainty()
        self.uncertainty_layer = self.viewer.add_image(data, **kwargs)
        if self.labels_layer is not None:  # keep the editable labels on top
            self.viewer.layers.move(self.viewer.layers.index(self.uncertainty_layer),
                                    self.viewer.layers.index(self.labels_layer))
            self.viewer.layers.selection.active = self.labels_layer
        return True

    def _drop_uncertainty(self) -> None:
        """Remove the uncertainty overlay, which belongs to the labels being replaced.

        A hidden overlay is not built for every prediction: it is built when
        ``uncertainty_wanted`` (the *Show uncertainty* box) asks for it. Building it took ~0.3 s
        of the GUI thread under software OpenGL, part of the longest stall the GUI benchmark
        measured when a prediction arrives.
        """
        if self.uncertainty_layer is not None and self.uncertainty_layer in self.viewer.layers:
            self.viewer.layers.remove(self.uncertainty_layer)
        self.uncertainty_layer = None


def _read_prediction(rev: Revision, uncertainty: tuple | None):
    """Worker thread: a prediction's labels, and its stored uncertainty levels when asked for
    (``uncertainty`` = ``Project.prediction_uncertainty_file``); files only, no database."""
    labels = read_revision_file(rev)
    return labels, None if uncertainty is None else read_uncertainty_levels(*uncertainty)


def prediction_name(rev: Revision) -> str:
    return f"{rev.case_id} prediction run-{rev.run_id:04d}" if rev.run_id is not None else f"{rev.case_id} prediction"


def revision_text(rev: Revision) -> str:
    if rev.kind == "model":
        return f"prediction of run {rev.run_id}, revision {rev.id}"
    return f"{'label' if rev.final else 'draft'} by {rev.author}, revision {rev.id}"
