# Two commands a user needs: `make run` (every params section checked, then the pipeline on the default params)
# and `make test` (the test suite). Both rest on `make setup`, which reuses an
# existing .venv and installs only when requirements.txt or pyproject.toml change.
SHELL := /bin/bash
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist

export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: setup run test fashion-mnist

setup: $(STAMP) fashion-mnist

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# Offline Fashion-MNIST (the default dataset) from Debian, where apt is
# available and we may use it; elsewhere torchvision downloads it on first use.
fashion-mnist:
	@if [ -d $(FASHION_MNIST) ]; then :; \
	elif command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); \
	  $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null \
	  || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
	  || echo "warning: could not install dataset-fashion-mnist; fashion_mnist will need the network"; \
	else echo "note: apt unavailable; fashion_mnist will be downloaded by torchvision on first use"; fi

run: setup
	uia check --params params.yaml
	dvc repro

test: setup
	$(BIN)/python -m pytest
