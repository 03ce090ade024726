# fbexplorer: the few commands people need.
#   make test   set up .venv (and graphviz) and run the test suite (all but tests/browser):
#               on TensorFlow, then the tests marked `jax` with KERAS_BACKEND=jax, each on
#               $(TEST_WORKERS) workers (pytest-xdist); about 15 minutes on 2 cores
#   make test-fast  the inner loop: no `slow` tests, hypothesis's `dev` profile, stop at
#               the first failure (under 3 minutes); PYTEST_ARGS=... adds pytest options
#   make lab    the same setup, then JupyterLab on notebooks/
#   make test-browser  runs a notebook in JupyterLab 4 and in Notebook 7 in headless
#               Chromium (apt) and plays its explorers, opens a saved explorer page from
#               disk offline, exports a notebook with nbconvert and plays the page
#               from disk with no server (the CDN files it loads come from npm),
#               and exports figures through kaleido (tests/browser);
#               FBX_BROWSER_NOTEBOOK=path picks the notebook; screenshots in build/
#   make docs   the documentation site (mkdocs.yml, docs/) into build/site, with
#               `mkdocs build --strict`: a broken link or reference fails it
#   make lint   ruff
#   make bench  the benchmarks (benchmarks/README.md); BENCH_ARGS=--quick for a smoke run
#   make bench-torch  installs PyTorch (the CPU build where its index is reachable, else
#               PyPI's), the optional contender of benchmarks/fit_predict.py
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

.PHONY: setup graphviz chromium npm test test-fast test-browser lab lint docs bench bench-torch

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,$(TF_EXTRA),sweep]"
	@touch $@

graphviz:
	@command -v dot >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q graphviz; }

setup: $(STAMP) graphviz

BROWSER_STAMP := $(VENV)/.installed-browser-$(TF_EXTRA)

$(BROWSER_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[test,$(TF_EXTRA),sweep,browser]"
	@touch $@

# Debian's Chromium; `playwright install` would download a browser.
chromium:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

# npm: the browser test fetches the widget front ends that an exported notebook
# page loads from a CDN (tests/browser/widget_cdn.py; cached in build/widget-cdn).
npm:
	@command -v npm >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q npm; }

# Two workers (the machine's two cores).
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test: setup
	HYPOTHESIS_PROFILE=ci $(PYTEST)
	HYPOTHESIS_PROFILE=ci KERAS_BACKEND=jax $(PYTEST) -m jax

test-fast: setup
	HYPOTHESIS_PROFILE=dev $(PYTEST) -x -m "not slow"

test-browser: setup chromium npm $(BROWSER_STAMP)
	$(PY) -m pytest -q tests/browser

lab: setup
	$(PY) -m pip install -q "jupyterlab>=4"
	mkdir -p notebooks
	$(VENV)/bin/jupyter lab notebooks/ $(LAB_FLAGS)

DOCS_STAMP := $(VENV)/.installed-docs-$(TF_EXTRA)

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[$(TF_EXTRA),docs]"
	@touch $@

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site

lint: setup
	$(PY) -m ruff check fbexplorer tests benchmarks

bench: setup
	$(PY) benchmarks/run.py $(BENCH_ARGS)
	$(PY) benchmarks/trace.py $(BENCH_ARGS)

bench-torch: setup
	$(PY) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu \
		|| $(PY) -m pip install -q -e ".[bench]"
