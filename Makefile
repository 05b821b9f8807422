# The commands the README names. `make test` and `make demo` create the virtual environment when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: venv demo test test-slow test-gpu test-docs test-browser lint ci bench bench-detr clean

venv: $(STAMP)

# torch first and on its own: pip takes the pinned CUDA build (which also runs on the CPU) from the local disk.
$(STAMP): setup.cfg pyproject.toml requirements/pins.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c requirements/pins.txt torch torchvision
	$(PY) -m pip install --quiet -c requirements/pins.txt -e ".[tests,space]"
	touch $(STAMP)

# Trains a small DETR from scratch on the synthetic shapes set on the CPU (about 10 minutes), evaluates, draws, reloads.
demo: $(STAMP)
	$(PY) scripts/demo.py --output_dir outputs/demo

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

test-gpu: $(STAMP)
	$(PY) -m pytest -m gpu

# Every shell command of README.md and docs/, with small budgets (a few minutes on 2 CPU cores).
test-docs: $(STAMP)
	$(PY) -m pytest -m docs

# The Space app served on 127.0.0.1 and driven in headless Chromium: Debian's chromium package (.ci/run installs it with
# apt-get), driven by Playwright for Python; no browser is downloaded.
test-browser: $(STAMP)
	$(PY) -m pytest -m browser

# ruff (pycodestyle, pyflakes, isort, bugbear, pyupgrade; settings in pyproject.toml) over the whole repository.
lint: $(STAMP)
	$(PY) -m ruff check .

# What .ci/run runs on a fresh clone: the linter and every CPU tier (default, slow, docs, browser).
ci: lint test test-slow test-docs test-browser

# Every side-by-side comparison against transformers in one process (markdown table + JSON).
bench: $(STAMP)
	$(PY) benchmarks/run_all.py

bench-detr: $(STAMP)
	$(PY) benchmarks/bench_detr.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
