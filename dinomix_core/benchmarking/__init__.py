"""Benchmarks users can rerun: SSL methods on the phantom, step cost, DHC-protocol recipes.

Floor 4 (beside the CLI): composes the engine; `dinomix bench ...` and `benchmarks/*.py` call it.
"""
