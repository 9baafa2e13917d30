# Quick start: `make demo` (set up + run the offline demo) and `make test` (set up + run the tests).
# Both create ./.venv on first use. torch/torchvision are pinned here because this pair is served from local disk
# on the project's machines; pyproject.toml itself only sets lower bounds.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?= -n 2 --durations=10

.PHONY: demo test install clean

$(BIN)/deepfeat: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(TORCH_PINS)
	$(BIN)/python -m pip install -e ".[test]"
	touch $@

install: $(BIN)/deepfeat

demo: install
	$(BIN)/deepfeat demo

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) deepfeat-demo .pytest_cache
