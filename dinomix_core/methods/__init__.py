"""DINO-Mix training methods (floor 2, pure torch): one module per part of METHOD.md.

- ``losses``: soft Dice, class/voxel-weighted cross-entropy, Dice + CE.
- ``ramps``: sigmoid/linear ramp-ups and the poly learning-rate schedule.
- ``mean_teacher``: EMA teacher, confidence-masked pseudo-labels, tail-aware thresholds.
- ``fkd``: uniqueness-weighted DINOv3 token distillation and prototype anchoring.
- ``pic``: class frequencies, curriculum class sampling and bidirectional CutMix.

Nothing here imports data, engine, project or cli; the trainer composes these parts.
"""
