"""Keep Triton out of the GUI process.

Why: Triton ships its own LLVM. Under software OpenGL (Mesa's llvmpipe: Xvfb, virtual
machines, remote desktops) Qt and vispy have already loaded Mesa's LLVM, and importing Triton
afterwards crashed the process here (napari viewer open, then ``import timm`` -> torchvision
-> ``torch._dynamo`` -> ``triton``: segmentation fault); with Triton loaded first, the two
LLVMs crashed the interpreter at exit instead. The GUI process never compiles GPU kernels
(training and prediction run in the worker process, which this module does not touch), so it
marks Triton as unavailable and torch then treats it as not installed.
"""

from __future__ import annotations

import sys

if "triton" not in sys.modules:
    sys.modules["triton"] = None  # `import triton` now raises ImportError: "not installed"
