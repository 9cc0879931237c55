"""The app's keyboard shortcuts for the annotation loop, in one table.

Chosen not to clash with napari's own keys (its Labels keys: 1-7, E, P, F, L, Z, M, X, B,
-, =, [, ], Ctrl-Z, Shift-Ctrl-Z; its viewer keys: Ctrl-R, Ctrl-G, Ctrl-Y, Ctrl-E, Ctrl-T,
arrows, V, Space...); a test checks the table against napari's shortcut registry.
"""

from __future__ import annotations

SHORTCUTS: dict[str, tuple[str, str]] = {
    # action id: (key sequence, what it does)
    "next_case": ("Ctrl+Shift+N", "Open the next suggested case"),
    "accept": ("Ctrl+Return", "Accept the current labels as the case's label"),
    "save_draft": ("Ctrl+S", "Save the current labels as a draft now"),
    "undo": ("Ctrl+Z", "Undo the last labels edit (napari's own key)"),
    "redo": ("Ctrl+Shift+Z", "Redo (napari's own key)"),
    "previous_class": ("PgUp", "Paint with the previous class"),
    "next_class": ("PgDown", "Paint with the next class"),
    "window_abdomen": ("Ctrl+1", "CT window: Abdomen (W350/L40)"),
    "window_bone": ("Ctrl+2", "CT window: Bone (W1000/L400)"),
    "window_lung": ("Ctrl+3", "CT window: Lung (W1400/L-500)"),
    "window_soft_tissue": ("Ctrl+4", "CT window: Soft tissue (W400/L40)"),
    "window_brain": ("Ctrl+5", "CT window: Brain (W100/L50)"),
    "toggle_prediction": ("Ctrl+Shift+P", "Show / hide the prediction layer"),
    "toggle_uncertainty": ("Ctrl+Shift+U", "Show / hide the uncertainty overlay"),
    "open_project": ("Ctrl+O", "Open a project"),
    "quit": ("Ctrl+Q", "Quit"),
}
# Actions that reuse napari's own binding on purpose (so they are not clashes).
NAPARI_OWNED = ("undo", "redo")


def key_of(action: str) -> str:
    return SHORTCUTS[action][0]


def help_text() -> str:
    width = max(len(k) for k, _ in SHORTCUTS.values())
    return "\n".join(f"{key:<{width}}  {what}" for key, what in SHORTCUTS.values())
