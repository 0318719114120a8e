# fashion-mnist-lightning. `make help` lists the targets; `make train` and `make test` do all set-up themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
LOCK := requirements.lock
INSTALLED := $(VENV)/.installed
DATA_DIR ?= data
DATA := $(DATA_DIR)/fashion-mnist-uint8.pt
CONFIG ?= configs/default.yaml
ARGS ?=
RESUME ?=
RESUME_ARGS := $(if $(RESUME),--ckpt_path last,)
PORT ?= 6006
SWEEP ?= configs/sweeps/smoke.yaml
WORKERS ?= 1
# pytest-xdist processes for `make test` and `make test-fast`: one more than the cores. Most tests wait on a command's
# start-up, a signal or a server, leaving their core idle: with one per core the suite used 166 % of 2 cores
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
STUDY ?=
# a checkpoint for crosscheck / predict / export / report: CKPT=path, default the newest run's best checkpoint
CKPT ?= best
FORMAT ?= onnx

.DEFAULT_GOAL := help
.PHONY: help install lock data train test test-fast lint tensorboard sweep dashboard bench crosscheck \
	reference-demo predict export serve bench-serve report rename clean

help: ## list the targets, one line each
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

install: $(INSTALLED) ## create .venv and install the locked, hash-checked versions (requirements.lock) + the project, editable

lock: ## refresh requirements.lock from pyproject.toml: every extra, every Python it supports, with hashes (needs the index)
	@test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet uv; }
	$(BIN)/uv pip compile pyproject.toml --all-extras --universal --python-version 3.11 --generate-hashes \
		--no-header --quiet -o $(LOCK)
	@echo "wrote $(LOCK); \`make install\` installs it"

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

test: $(INSTALLED) $(DATA) ## the whole test suite, slow tests included (what CI runs), in parallel workers
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)

test-fast: $(INSTALLED) $(DATA) ## the test suite without the tests marked slow (strong config, DDP, servers)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow" $(ARGS)

lint: $(INSTALLED) ## ruff check + ruff format --check (what CI's lint job and pre-commit run)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

tensorboard: $(INSTALLED) ## serve lightning_logs/ on localhost (PORT=6006) and print the URL
	@echo "TensorBoard: http://localhost:$(PORT)"
	$(BIN)/tensorboard --logdir lightning_logs --host localhost --port $(PORT)

sweep: $(INSTALLED) $(DATA) ## run the Optuna sweep SWEEP (default configs/sweeps/smoke.yaml) with WORKERS processes
	@pids=(); for i in $$(seq 1 $(WORKERS)); do \
	  $(BIN)/fashion-mnist sweep --config $(SWEEP) --worker $$((i - 1)) $(ARGS) & pids+=($$!); done; \
	  status=0; for pid in $${pids[@]}; do wait $$pid || status=$$?; done; exit $$status

dashboard: PORT = 8080
dashboard: $(INSTALLED) ## serve Optuna's dashboard for SWEEP's study on localhost (PORT=8080)
	$(BIN)/fashion-mnist sweep --config $(SWEEP) --dashboard $(PORT) $(ARGS)

bench: $(INSTALLED) $(DATA) ## time the template vs its own bare step and Lightning's floor, vs raw/seed loops and the peer path -> benchmarks/results/
	$(PY) benchmarks/bench.py --make-train $(ARGS)

crosscheck: $(INSTALLED) $(DATA) ## NumPy reference vs torch on the 10k test images (CKPT=path|best|last)
	$(BIN)/fashion-mnist crosscheck --ckpt_path $(CKPT) --data_dir $(DATA_DIR)

reference-demo: $(INSTALLED) ## train the book's toy network by hand-written backprop (NumPy)
	$(PY) -m fashion_mnist_lightning.extras.reference

predict: $(INSTALLED) $(DATA) ## predict IMAGES=folder (default: the test set) with CKPT (default best) -> CSV
	$(BIN)/fashion-mnist predict --config $(CONFIG) --ckpt_path $(CKPT) $(if $(IMAGES),--data.predict_dir $(IMAGES),) $(ARGS)

export: $(INSTALLED) ## export CKPT (default best) as FORMAT=onnx|pt2|torchscript|state_dict|safetensors
	$(BIN)/fashion-mnist export --ckpt_path $(CKPT) --format $(FORMAT) $(ARGS)

serve: PORT = 8000
serve: $(INSTALLED) ## serve CKPT (default best) on http://127.0.0.1:PORT (8000): web page + API; Ctrl-C stops
	$(BIN)/fashion-mnist serve --ckpt_path $(CKPT) --port $(PORT) $(ARGS)

bench-serve: $(INSTALLED) $(DATA) ## requests/s and latency of serve, with vs without dynamic batching (CKPT=...)
	$(PY) benchmarks/serve.py --ckpt_path $(CKPT) $(ARGS)

report: $(INSTALLED) $(DATA) ## curves, confusion matrices, per-class table, confident mistakes -> <run>/report/ (CKPT=...)
	$(BIN)/fashion-mnist report --ckpt_path $(CKPT) --data_dir $(DATA_DIR)

rename: ## make the template your project: NAME=my_project renames the package, the distribution and the command
	$(PYTHON) scripts/rename.py $(NAME)

clean: ## remove caches and build files (keeps .venv, data/ and lightning_logs/)
	rm -rf .pytest_cache .ruff_cache build dist src/*.egg-info
	find . -name __pycache__ -type d -not -path './.venv/*' -prune -exec rm -rf {} +
