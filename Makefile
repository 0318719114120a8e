# fashion-mnist-lightning. `make help` lists the targets; `make train` and `make test` do all set-up themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DATA_DIR ?= data
DATA := $(DATA_DIR)/fashion-mnist-uint8.pt
CONFIG ?= configs/default.yaml
ARGS ?=
RESUME ?=
RESUME_ARGS := $(if $(RESUME),--ckpt_path last,)
PORT ?= 6006
# newest best checkpoint, for crosscheck
CKPT ?= $(shell ls -t lightning_logs/version_*/checkpoints/epoch*.ckpt 2>/dev/null | head -n 1)

.DEFAULT_GOAL := help
.PHONY: help install data train test tensorboard lint clean bench crosscheck reference-demo predict export report

help: ## list the targets, one line each
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(INSTALLED) ## create .venv and install the project editable with the dev extra (once)

$(DATA): | $(INSTALLED)
	@if ! $(PY) -m fashion_mnist_lightning.data --data_dir $(DATA_DIR) --check; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "No Fashion-MNIST found: installing Debian's dataset-fashion-mnist"; \
	    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	  fi; \
	fi
	$(PY) -m fashion_mnist_lightning.data --data_dir $(DATA_DIR)

data: $(DATA) ## find, verify and cache Fashion-MNIST (installs the Debian package as root if missing)

train: $(INSTALLED) $(DATA) ## fit CONFIG (default configs/default.yaml), test the best checkpoint; ARGS="..." adds flags, RESUME=1 resumes
	$(BIN)/fashion-mnist fit --config $(CONFIG) --test_after_fit true $(RESUME_ARGS) $(ARGS)

test: $(INSTALLED) $(DATA) ## run the test suite (pytest)
	$(PY) -m pytest

tensorboard: $(INSTALLED) ## serve lightning_logs/ on localhost (PORT=6006) and print the URL
	@echo "TensorBoard: http://localhost:$(PORT)"
	$(BIN)/tensorboard --logdir lightning_logs --host localhost --port $(PORT)

bench: $(INSTALLED) $(DATA) ## time template vs raw loop vs seed loop vs peer path, interleaved -> benchmarks/results/
	$(PY) benchmarks/bench.py --make-train

crosscheck: $(INSTALLED) $(DATA) ## NumPy reference vs torch on the 10k test images (CKPT=..., default: newest best)
	@if [ -z "$(CKPT)" ]; then echo "error: no checkpoint found; run make train first or pass CKPT=path.ckpt" >&2; exit 2; fi
	$(BIN)/fashion-mnist crosscheck --ckpt_path $(CKPT) --data_dir $(DATA_DIR)

# predict and export use the checkpoint's own run config (version_N/config.yaml) when there is one
RUN_CONFIG = $(or $(wildcard $(dir $(CKPT))../config.yaml),$(CONFIG))
FORMAT ?= onnx

predict: $(INSTALLED) $(DATA) ## predict IMAGES=folder (default: the test set) with CKPT (default: newest best) -> CSV
	@if [ -z "$(CKPT)" ]; then echo "error: no checkpoint found; run make train first or pass CKPT=path.ckpt" >&2; exit 2; fi
	$(BIN)/fashion-mnist predict --config $(RUN_CONFIG) --ckpt_path $(CKPT) $(if $(IMAGES),--data.predict_dir $(IMAGES),) $(ARGS)

export: $(INSTALLED) ## export CKPT (default: newest best) as FORMAT=onnx|torchscript|state_dict|safetensors
	@if [ -z "$(CKPT)" ]; then echo "error: no checkpoint found; run make train first or pass CKPT=path.ckpt" >&2; exit 2; fi
	$(BIN)/fashion-mnist export --ckpt_path $(CKPT) --format $(FORMAT) $(ARGS)

report: $(INSTALLED) $(DATA) ## curves, confusion matrices, per-class table, confident mistakes -> <run>/report/ (CKPT=...)
	@if [ -z "$(CKPT)" ]; then echo "error: no checkpoint found; run make train first or pass CKPT=path.ckpt" >&2; exit 2; fi
	$(BIN)/fashion-mnist report --ckpt_path $(CKPT) --data_dir $(DATA_DIR)

reference-demo: $(INSTALLED) ## train the book's toy network by hand-written backprop (NumPy)
	$(PY) -m fashion_mnist_lightning.reference

lint: $(INSTALLED) ## ruff check of src, tests and benchmarks
	$(BIN)/ruff check src tests benchmarks

clean: ## remove caches and build files (keeps .venv, data/ and lightning_logs/)
	rm -rf .pytest_cache .ruff_cache build dist src/*.egg-info
	find . -name __pycache__ -type d -not -path './.venv/*' -prune -exec rm -rf {} +
