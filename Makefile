# The commands the README names. `make test` and `make demo` create the virtual environment when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: venv demo test test-slow test-gpu bench bench-detr clean

venv: $(STAMP)

# torch first and on its own: pip takes the pinned CUDA build (which also runs on the CPU) from the local disk.
$(STAMP): setup.cfg pyproject.toml requirements/pins.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c requirements/pins.txt torch torchvision
	$(PY) -m pip install --quiet -c requirements/pins.txt -e ".[tests]"
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

# Every side-by-side comparison against transformers in one process (markdown table + JSON).
bench: $(STAMP)
	$(PY) benchmarks/run_all.py

bench-detr: $(STAMP)
	$(PY) benchmarks/bench_detr.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
