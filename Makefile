# The README's two commands: `make demo` and `make test`.
# Each creates .venv when missing and installs what it needs; a second run installs nothing.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.dinomix-installed
CORE_STAMP := $(VENV)/.dinomix-core-installed
# Exact torch pins for this project's own environment (pyproject keeps honest ranges, so a
# user's GPU machine can keep its own build).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

export HF_HUB_OFFLINE := 1

.PHONY: demo test install sysdeps bench clean

install: $(STAMP)

# The engine and the CLI alone (no Qt): all `make demo` needs.
$(CORE_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e .
	@touch $(CORE_STAMP)

# Everything: the GUI extra, MONAI and the test tools.
$(STAMP): $(CORE_STAMP)
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

sysdeps:
	@bash .ci/ensure-xvfb

demo: $(CORE_STAMP)
	$(VENV)/bin/dinomix demo --out demo_out

test: $(STAMP) sysdeps
	$(PY) -m pytest -q

# The quick benchmark set (a few minutes); `make bench BENCH=all` or BENCH="inference gui" for others.
BENCH ?=
bench: $(STAMP) sysdeps
	$(PY) -m benchmarks.run_all $(BENCH)

clean:
	rm -rf demo_out .pytest_cache
