# Two entry points (README): `make run` and `make test`. Both create .venv and install everything.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
DATASET_DIR ?= /usr/share/datasets/fashion-mnist
PORT ?= 5000
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup test-deps run test ui team-server dataset clean-runs bench bench-data bench-loader sweep gpu-check gpu-wheels

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,team,explore]'
	touch $@

dataset:
	@if [ ! -f "$(DATASET_DIR)/train-images-idx3-ubyte.gz" ] && [ ! -f "$(DATASET_DIR)/train-images-idx3-ubyte" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	  else \
	    echo "error: Fashion-MNIST is missing from $(DATASET_DIR): run 'sudo apt-get install dataset-fashion-mnist', or point data.source/data.path in params.yaml at your own images" >&2; \
	    exit 1; \
	  fi; \
	fi

# What the browser and team-mode tests run against: Debian's Chromium (and its chromedriver, which
# Selenium drives the explorer's page through) and PostgreSQL. `make test` installs them (as root;
# otherwise it says what to run), so it runs the same tests as CI.
test-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing (Debian packages, for the browser and team-mode tests)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: could not install$$missing; the tests that need it will skip, saying so" >&2; \
	  else \
	    echo "error: the tests need$$missing: run 'sudo apt-get install$$missing'" >&2; exit 1; \
	  fi; \
	fi

setup: $(VENV)/.installed dataset

run: setup
	dvc repro

# Two pytest processes (pytest-xdist), each taking whole test files: one process left a core
# idle ~half the time, waiting on the DVC, MLflow, Chromium and stage subprocesses the tests run.
TEST_WORKERS ?= 2
test: setup test-deps
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: setup  # narrow it with e.g. BENCH_ARGS="--configs mnist --levels 3"
	$(VENV)/bin/python -m benchmarks $(BENCH_ARGS)

# The CUDA path: the tests marked `gpu`, then benchmarks/gpu.py, into gpu_check.json (about 2-4 min
# on one GPU). It needs the library alone, so it runs on a machine with only python3 and torch: the
# venv's python where there is one, else python3 (GPU_PYTHON=...), with the pure-Python packages it
# lacks installed from .gpu-wheels/ (made here by `make gpu-wheels`). Without CUDA it says so, exit 0.
GPU_PYTHON ?= $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,python3)
gpu-check:
	$(GPU_PYTHON) scripts/gpu_check.py --out gpu_check.json

gpu-wheels: setup  # the versions this venv runs
	mkdir -p .gpu-wheels
	$(VENV)/bin/pip freeze | grep -iE '^(webdataset|braceexpand|pytorch[-_]fid)==' > .gpu-wheels/requirements.txt
	$(VENV)/bin/pip download --quiet --disable-pip-version-check --no-deps -d .gpu-wheels \
	  -r .gpu-wheels/requirements.txt

# The shard stage at scale: a synthetic folder of BENCH_DATA_COUNT 256 px colour images
# (data/synth/bench-30k, made by scripts/synth_images.py when missing), sharded with 1 and 2
# workers in each encoding: img/s, bytes, peak memory, decode img/s (benchmarks/data_results.json).
BENCH_DATA_COUNT ?= 30000
bench-data: setup
	$(VENV)/bin/python -m benchmarks.data_speed --count $(BENCH_DATA_COUNT) $(BENCH_DATA_ARGS)

# Training-loader img/s at 256 px with 0, 1 and 2 decoding workers (data.loader_workers), and the
# cores that feed a GPU (README: loading data for training). 1000 synthetic images, sharded once.
LOADER_BENCH ?= .alae/bench-loader
bench-loader: setup
	@test -d $(LOADER_BENCH)/images || $(VENV)/bin/python scripts/synth_images.py \
	  --out $(LOADER_BENCH)/images --count 1000 --size 256
	$(VENV)/bin/python benchmarks/loader_speed.py --shards $(LOADER_BENCH)/shards \
	  --build-from $(LOADER_BENCH)/images --out $(LOADER_BENCH)/results.json $(LOADER_ARGS)

# Queue every candidate x seed of GRID as a DVC experiment, run them one at a time, export the
# MLflow runs to sweeps/<name>.csv and regenerate the README's sweep table and figure.
GRID ?= sweeps/default.yaml
sweep: setup
	$(VENV)/bin/python scripts/sweep.py all $(GRID) $(SWEEP_ARGS)

# Old runs' working folders (.alae/runs/<key>: resumable checkpoints); the current params' run is
# kept. DVC's cache is cleaned by `dvc gc -w`.
clean-runs: $(VENV)/.installed
	$(VENV)/bin/python scripts/clean_runs.py

ui: setup
	@echo "Runs table: http://127.0.0.1:$(PORT)/#/experiments/<id>/runs?viewStateShareKey=alae-runs&workflowType=machine_learning" \
		"(results as columns; MLflow 3 opens experiments as GenAI traces otherwise)"
	mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow.db" --host 127.0.0.1 --port $(PORT)

# Team mode: PostgreSQL (data in $(TEAM_DIR)/pgdata, 127.0.0.1:$(PG_PORT)) and `mlflow server` with
# proxied artifacts on 127.0.0.1:$(PORT), in the foreground; Ctrl-C stops both.
TEAM_DIR ?= .team
PG_PORT ?= 5433
team-server: $(VENV)/.installed
	TEAM_DIR="$(TEAM_DIR)" PG_PORT="$(PG_PORT)" PORT="$(PORT)" scripts/team_server.sh
