# The README's commands: `make demo` (main job) and `make test` (test suite).
# Both ensure the environment first; PYTHON=... picks the venv's interpreter.
PYTHON ?= python3
VENV_PY := .venv/bin/python

.PHONY: install demo test check-env

install:
	@PYTHON=$(PYTHON) bash tools/install.sh

demo: install
	$(VENV_PY) tools/demo_detection.py

test: install
	$(VENV_PY) -m pytest -q

check-env:
	$(VENV_PY) tools/check_env.py

# Toy segmentation demo (docs/segmentation.md): data -> train -> test -> plot, < 10 min on 2 cores.
.PHONY: demo-seg
demo-seg: install
	$(VENV_PY) tools/demo_segmentation.py
