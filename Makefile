# The README's commands: `make demo` (main job) and `make test` (test suite).
# Both ensure the environment first; PYTHON=... picks the venv's interpreter.
PYTHON ?= python3
VENV_PY := .venv/bin/python

.PHONY: install install-torch-floor demo test check-env

install:
	@PYTHON=$(PYTHON) bash tools/install.sh

# torch 2.1 + mmengine in a cached virtualenv outside the repository, for tests/test_torch_floor.py.
install-torch-floor:
	@PYTHON=$(PYTHON) bash tools/install_torch_floor.sh >/dev/null

demo: install
	$(VENV_PY) projects/toy_demo/demo_detection.py

test: install install-torch-floor
	$(VENV_PY) -m pytest -q

check-env:
	$(VENV_PY) tools/misc/check_env.py

# Toy segmentation demo (docs/segmentation.md): data -> train -> test -> plot, < 10 min on 2 cores.
# SEED (training) and DATA_SEED (the generated toy set) default to 0: make demo-seg SEED=1
SEED ?= 0
DATA_SEED ?= 0
.PHONY: demo-seg
demo-seg: install
	$(VENV_PY) projects/toy_demo/demo_segmentation.py --seed $(SEED) --data-seed $(DATA_SEED)
