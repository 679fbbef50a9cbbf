# Quick start: `make demo` pre-labels the bundled samples; `make test` runs the whole suite.
# Both create .venv (pip only: it takes torch/torchvision from the local wheel store when there is one).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OFFLINE := HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 YOLO_CONFIG_DIR=$(CURDIR)/.cache/ultralytics

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[models,postgres,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/autolabel demo

test: $(STAMP)
	$(OFFLINE) $(PY) -m pytest -q

bench: $(STAMP)
	$(OFFLINE) $(PY) bench/pipeline.py

clean:
	rm -rf $(VENV) .cache out
