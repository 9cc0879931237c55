"""Tiny training settings shared by the engine and CLI tests (not a test module)."""

# A teacher of the real DINOv3 architecture, shrunk so CPU tests stay fast.
TINY_TEACHER = dict(depth=1, embed_dim=32, num_heads=2)
TINY = dict(student_width=4, student_depth=2, patch_size=(16, 32, 32), batch_labeled=1, batch_unlabeled=1)
