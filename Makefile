# Two commands for a fresh machine (see README):
#   make demo   set up, then run the main job on the embedded (simulated) default data
#   make test   set up, then lint and run the test suite (the end-to-end lane: make test-e2e)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PROFILE ?= auto

# Offline and quiet, always.
export DAGSTER_HOME := $(CURDIR)
export MLFLOW_DISABLE_TELEMETRY := true
export ORT_DISABLE_TELEMETRY := 1
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: setup demo test test-e2e lint ui clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[train,deploy,dev,scale,openvino]'
	touch $@

demo: setup
	@test -d data || $(BIN)/smh-ml simulate data --profile $(PROFILE)
	$(BIN)/smh-ml data-commit
	SMH_PROFILE=$(PROFILE) $(BIN)/python -m pipelines

test: setup lint
	$(BIN)/pytest -m "not e2e"

# whole Dagster graphs, the paper's reproduction, the automation daemon, scale-out, a GAN that learns
test-e2e: setup
	$(BIN)/pytest -m e2e

lint: setup
	$(BIN)/ruff check smh_ml pipelines tests scripts benchmarks

ui: setup
	SMH_PROFILE=$(PROFILE) $(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf artifacts .dagster history storage schedules .pytest_cache
