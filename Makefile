# The README's two commands: `make demo` and `make test`.
# Each creates .venv when missing and installs what it needs; a second run installs nothing.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.dinomix-installed
# Exact torch pins for this project's own environment (pyproject keeps honest ranges, so a
# user's GPU machine can keep its own build).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

export HF_HUB_OFFLINE := 1

.PHONY: demo test install sysdeps bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

sysdeps:
	@bash .ci/ensure-xvfb

demo: $(STAMP)
	$(VENV)/bin/dinomix demo --out demo_out

test: $(STAMP) sysdeps
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m benchmarks.run_all

clean:
	rm -rf demo_out .pytest_cache
