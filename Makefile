# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv/ from the package registries on first use.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned to the CPU build these machines carry; a ROS system uses its own.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: venv test test-shuffled test-fast demo benchmark gpu-check clean

venv: $(STAMP)

$(STAMP): setup.py Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[all]"
	touch $(STAMP)

# The suite in file order; the layer contracts run inside it (test/test_layers.py).
test: $(STAMP)
	$(BIN)/python -m pytest test -p no:randomly

# The same suite shuffled (pytest-randomly); SEED picks the order, e.g. make test-shuffled SEED=7.
SEED ?= 1
test-shuffled: $(STAMP)
	$(BIN)/python -m pytest test --randomly-seed=$(SEED)

# The edit-test loop: everything but the tests marked slow (DDS processes, training runs, the demo).
test-fast: $(STAMP)
	$(BIN)/python -m pytest test -m "not slow" -q -p no:randomly

demo: $(STAMP)
	$(BIN)/mtan-demo

benchmark: $(STAMP)
	$(BIN)/python -m mtan_ros.benchmarks.inference

# Everything the package does on a GPU, in one table (under 8 minutes); skips its CUDA rows elsewhere.
gpu-check: $(STAMP)
	$(BIN)/python -m mtan_ros.benchmarks.gpu_check --json runs/gpu_check.json

clean:
	rm -rf $(VENV) build *.egg-info
