# Two set-up commands for a fresh machine (see README):
#   make demo   creates .venv and runs the main job (LSMS demo on the synthetic RefHL-Seg-style benchmark v1)
#   make test   creates .venv and runs the test suite
# CPU-only by default: torch is pinned to the CPU wheel through constraints-cpu.txt, so no CUDA package is downloaded.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS ?= constraints-cpu.txt
EXTRAS ?= demo,dev,dicom
DEMO_OUT ?= runs/demo

.PHONY: install demo test lint clean

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --no-cache-dir -c $(CONSTRAINTS) torch==2.13.0 -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/lsms demo --out $(DEMO_OUT)

test: install
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check lsms carzero brgsa datasets tests benchmarks

clean:
	rm -rf $(VENV) runs
