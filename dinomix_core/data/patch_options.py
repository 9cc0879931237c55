"""Choices of the patch sampler that a training config names, as plain data.

Apart from ``patches.py`` (which needs torch through the teacher's preprocessing) so that a
``TrainConfig`` can be checked where torch is not imported: the GUI process builds and
validates the config it sends to the worker.
"""

#: How organ-centred patches pick their organ: by inverse square-root frequency (the default), ...
CLASS_WEIGHTINGS = ("inverse-sqrt-frequency", "inverse-frequency", "uniform", "frequency")
