# fbexplorer: the few commands people need.
#   make test   set up .venv (and graphviz) and run the whole test suite
#   make lab    the same setup, then JupyterLab on notebooks/
#   make lint   ruff
#   make bench  the benchmarks (benchmarks/README.md); BENCH_ARGS=--quick for a smoke run
#
# TensorFlow: TF_EXTRA=tf-cpu (default, the CPU-only build) or TF_EXTRA=tf
# (the `tensorflow` package, with CUDA support where a GPU is present).

PYTHON ?= python3
VENV ?= .venv
TF_EXTRA ?= tf-cpu
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(TF_EXTRA)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Jupyter refuses to run as root without this flag (containers often run as root).
LAB_FLAGS ?= $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: setup graphviz test lab lint bench

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,$(TF_EXTRA)]"
	@touch $@

graphviz:
	@command -v dot >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q graphviz; }

setup: $(STAMP) graphviz

test: setup
	$(PY) -m pytest -q

lab: setup
	$(PY) -m pip install -q "jupyterlab>=4"
	mkdir -p notebooks
	$(VENV)/bin/jupyter lab notebooks/ $(LAB_FLAGS)

lint: setup
	$(PY) -m ruff check fbexplorer tests benchmarks

bench: setup
	$(PY) benchmarks/run.py $(BENCH_ARGS)
	$(PY) benchmarks/trace.py $(BENCH_ARGS)
