"""Train panel: settings, Start / Stop / Resume, progress with ETA, live plot, the run's log."""

from __future__ import annotations

import napari_dinomix._no_triton  # noqa: F401  (first: see the module)

from qtpy.QtWidgets import (QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar,
                            QPushButton, QSpinBox, QVBoxLayout, QWidget)

from dinomix_core.engine.config import METHODS
from dinomix_core.models.weights import list_weights

from napari_dinomix._jobs import PRESETS, TrainRequest
from napari_dinomix._worker import JobWorker
from napari_dinomix._plot import TrainingPlot
from napari_dinomix._status_line import StatusLine

STUDENTS = ("unet3d", "vnet", "unet2d", "unet2.5d")
ADD_WEIGHTS_TARGET = "napari_dinomix._job_targets:add_teacher_weights"
RANDOM_TEACHER = "random"
FKD_METHODS = ("fkd", "dinomix")


def _format_eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def cuda_available() -> bool:
    """Asked without torch: the GUI process does not import it (see ``cuda_presence``)."""
    from dinomix_core.engine.cuda_presence import cuda_present

    return cuda_present()


class TrainPanel(QWidget):
    def __init__(self, session, jobs, parent=None):
        super().__init__(parent)
        self.session = session
        self.jobs = jobs
        self.teacher_overrides: dict | None = None  # a smaller random ViT, for demos and tests
        self.config_overrides: dict = {}  # advanced TrainConfig fields
        self.num_threads: int | None = None  # worker torch threads (None: all cores)
        self.weights_worker: JobWorker | None = None  # installing a teacher weight file (install_weights)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.method = QComboBox()
        self.method.addItems(["dinomix", *[m for m in METHODS if m != "dinomix"]])
        self.method.setToolTip("DINO-Mix (default) or a baseline / ablation of it")
        self.preset = QComboBox()
        self.preset.addItems(list(PRESETS))
        self.student = QComboBox()
        self.student.addItems(STUDENTS)
        self.steps = QSpinBox()
        self.steps.setRange(1, 1_000_000)
        self.steps.setSingleStep(100)
        self.budget = QComboBox()
        self.budget.addItems(["steps", "minutes"])
        self.budget.setToolTip("Train for a number of steps, or for as many steps as fit in a number of minutes")
        budget_row = QHBoxLayout()
        budget_row.addWidget(self.steps, stretch=1)
        budget_row.addWidget(self.budget)
        self.device = QComboBox()
        self.device.addItem("CPU", "cpu")
        if cuda_available():
            self.device.addItem("CUDA", "cuda")
            self.device.setCurrentIndex(1)
        self.teacher = QComboBox()
        self.validation = QComboBox()
        self.validation.setToolTip("Held out from training to measure Dice when 3+ cases are labeled")
        form.addRow("Method", self.method)
        form.addRow("Settings", self.preset)
        form.addRow("Student", self.student)
        form.addRow("Budget", budget_row)
        form.addRow("Device", self.device)
        form.addRow("Teacher", self.teacher)
        form.addRow("Validation case", self.validation)
        layout.addLayout(form)
        self.teacher_warning = QLabel("")
        self.teacher_warning.setWordWrap(True)
        self.teacher_warning.setStyleSheet("color: #ffb74d;")
        layout.addWidget(self.teacher_warning)
        row = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.resume_button = QPushButton("Resume")
        for button in (self.start_button, self.stop_button, self.resume_button):
            row.addWidget(button)
        layout.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m")
        layout.addWidget(self.progress)
        self.status = StatusLine("idle")
        layout.addWidget(self.status)
        self.plot = TrainingPlot()
        layout.addWidget(self.plot, stretch=2)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.log.setMinimumHeight(80)
        layout.addWidget(self.log, stretch=1)

        self.preset.currentTextChanged.connect(self._apply_preset)
        self.budget.currentTextChanged.connect(self._budget_changed)
        self.method.currentTextChanged.connect(lambda _t: self._update_teacher_warning())
        self.teacher.activated.connect(self._teacher_chosen)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(jobs.stop_training)
        self.resume_button.clicked.connect(self.resume)
        jobs.step.connect(lambda ev: self.plot.record_step(ev.step, ev.losses))
        jobs.progress.connect(self._on_progress)
        jobs.stage.connect(self._on_stage)
        jobs.validation.connect(lambda ev: self.plot.add_validation(ev.step, ev.per_class_dice, ev.mean_dice))
        jobs.log.connect(self.log.appendPlainText)
        jobs.training_state.connect(self._on_state)
        session.project_changed.connect(lambda _r: self._refresh_project())
        session.cases_changed.connect(self._refresh_cases)
        self._apply_preset(self.preset.currentText())
        self.fill_teachers()
        self._refresh_project()
        self._on_state("idle")

    # -- settings --------------------------------------------------------------------------

    def _apply_preset(self, name: str) -> None:
        preset = PRESETS[name]
        self.student.setCurrentText(preset["student"])
        if self.budget.currentText() == "steps":
            self.steps.setValue(int(preset["steps"]))

    def _budget_changed(self, unit: str) -> None:
        if unit == "minutes":
            self.steps.setRange(1, 24 * 60)
            self.steps.setSingleStep(5)
            self.steps.setValue(10)
        else:
            self.steps.setRange(1, 1_000_000)
            self.steps.setSingleStep(100)
            self.steps.setValue(int(PRESETS[self.preset.currentText()]["steps"]))

    def fill_teachers(self, select: str | None = None) -> None:
        self.teacher.clear()
        for found in list_weights(by_name_only=True):  # no torch, no hashing in the GUI
            self.teacher.addItem(f"{found.arch} ({found.path.name})", str(found.path))
        self.teacher.addItem("Random teacher (no DINOv3 weights: for trying out only)", RANDOM_TEACHER)
        self.teacher.addItem("Add weights file…", "__add__")
        index = self.teacher.findData(select) if select else 0
        self.teacher.setCurrentIndex(max(0, index))
        self._update_teacher_warning()

    def _teacher_chosen(self, index: int) -> None:
        if self.teacher.itemData(index) != "__add__":
            self._update_teacher_warning()
            return
        path, _ = QFileDialog.getOpenFileName(self, "DINOv3 weights (.pth or .safetensors)", "",
                                              "Weights (*.pth *.pt *.safetensors);;All files (*)")
        self.teacher.setCurrentIndex(0)
        self._update_teacher_warning()
        if path:
            self.install_weights(path)

    def install_weights(self, path: str) -> None:
        """Check and install a DINOv3 weight file in a worker process, then select it.

        Not on the GUI thread: reading the tensors imports torch and timm (2.6 s and ~500 MiB
        the GUI process never pays otherwise), and hashing (1.1 s at ~1 GiB/s) and copying a
        ViT-L file (1.2 GB) takes seconds. The teacher list is locked meanwhile.
        """
        self.session.message.emit("info", f"Checking and installing the teacher weights {path}…")
        self.weights_worker = JobWorker(ADD_WEIGHTS_TARGET, str(path), num_threads=1, parent=self)
        self.weights_worker.finished.connect(self._weights_installed)
        self.weights_worker.start()
        self.teacher.setEnabled(False)
        self.start_button.setEnabled(self._can_start())

    def _can_start(self, running: bool | None = None) -> bool:
        """A project is open, no training runs (``running``: the state being entered), no weight
        file is being installed (the teacher it would train with is not chosen yet)."""
        running = self.jobs.training if running is None else running
        return self.session.project is not None and not running and self.weights_worker is None

    def _weights_installed(self, outcome) -> None:
        self.weights_worker.deleteLater()
        self.weights_worker = None
        self.start_button.setEnabled(self._can_start())
        if outcome.status == "completed":
            self.fill_teachers(select=str(outcome.value))
            self.session.message.emit("info", f"Teacher weights installed: {outcome.value}")
        else:  # a readable one-liner: wrong file, checksum, architecture
            self.fill_teachers()
            self.session.message.emit("error", f"Teacher weights not installed: {outcome.message.splitlines()[0]}")

    def _update_teacher_warning(self) -> None:
        uses_teacher = self.method.currentText() in FKD_METHODS
        self.teacher.setEnabled(uses_teacher and self.weights_worker is None)
        random_teacher = self.teacher.currentData() == RANDOM_TEACHER
        if uses_teacher and random_teacher:
            self.teacher_warning.setText("⚠ RANDOM TEACHER: no DINOv3 weights are installed, so FKD distils from a "
                                         "randomly initialised ViT. Fine for trying the app; for real use add the "
                                         "DINOv3 weights (Teacher ▸ Add weights file…).")
        else:
            self.teacher_warning.setText("")

    def _refresh_project(self) -> None:
        self.start_button.setEnabled(self._can_start())
        self._refresh_cases()

    def _refresh_cases(self) -> None:
        current = self.validation.currentData()
        self.validation.clear()
        self.validation.addItem("automatic (last labeled case)", None)
        if self.session.project is not None:
            for row in self.session.case_rows():
                if row.status == "labeled":
                    self.validation.addItem(row.case_id, row.case_id)
        index = self.validation.findData(current)
        self.validation.setCurrentIndex(max(0, index))

    def request(self) -> TrainRequest:
        teacher = self.teacher.currentData()
        return TrainRequest(
            method=self.method.currentText(), preset=self.preset.currentText(), student=self.student.currentText(),
            steps=self.steps.value() if self.budget.currentText() == "steps" else None,
            minutes=self.steps.value() if self.budget.currentText() == "minutes" else None,
            device=self.device.currentData(),
            teacher_weights=None if teacher in (None, "__add__") else teacher,
            validation_case=self.validation.currentData(), config_overrides=dict(self.config_overrides),
            teacher_overrides=self.teacher_overrides, num_threads=self.num_threads,
        )

    # -- actions ---------------------------------------------------------------------------

    def start(self) -> bool:
        self.plot.class_colors = self._class_colors()
        self.plot.clear()
        self.plot.prepare(list(self.plot.class_colors)[1:])  # foreground classes
        return self.jobs.start_training(self.request())

    def resume(self) -> bool:
        return self.jobs.start_training(self.jobs.last_request or self.request(), resume=True)

    def _class_colors(self) -> dict:
        label_map = self.session.label_map
        if label_map is None:
            return {}
        return {name: tuple(color) for name, color in zip(label_map.names, label_map.colors)}

    # -- progress --------------------------------------------------------------------------

    def _on_progress(self, ev) -> None:
        # At most once a second (Jobs.progress): the bar carries the step, ETA and loss, and
        # the loss plot draws in the same repaint when due. Each repaint costs the GUI thread
        # ~10 ms under software OpenGL whatever its size; the bar and a separate text line cost
        # 21 ms, the bar alone 12 ms (benchmarks.gui_step_cost).
        total = ev.losses.get("total")
        loss = "" if total is None else f" · loss {total:.3f}"
        self.progress.setFormat(f"%v / %m · ETA {_format_eta(ev.eta_seconds)}{loss}")
        self.progress.setRange(0, ev.total_steps)
        self.progress.setValue(ev.step)
        self.status.setText(f"training: {ev.total_steps} steps")  # unchanged text: no repaint
        self.plot.show_steps()

    def _on_stage(self, ev) -> None:
        if ev.stage == "training":
            return
        if ev.total:
            self.progress.setFormat("%v / %m")
            self.progress.setRange(0, ev.total)
            self.progress.setValue(ev.done)
        self.status.setText(f"{ev.stage}: {ev.message} ({ev.done}/{ev.total})" if ev.total else f"{ev.stage}: {ev.message}")

    def _on_state(self, state: str) -> None:
        running = state in ("starting", "running", "stopping")
        has = self.session.project is not None
        self.start_button.setEnabled(self._can_start(running))
        self.resume_button.setEnabled(has and not running and state in ("cancelled", "failed"))
        self.stop_button.setEnabled(running and state != "stopping")
        for control in (self.method, self.preset, self.student, self.steps, self.budget, self.device, self.teacher,
                        self.validation):
            control.setEnabled(not running)
        if not running:
            self._update_teacher_warning()
        if state in ("completed", "cancelled", "failed", "idle", "starting", "stopping"):
            self.status.setText({"idle": "idle", "starting": "starting the worker…", "stopping": "stopping…"}.get(
                state, f"training {state}"))
