# Quick start: `make demo` pre-labels the bundled samples; `make test` runs the whole suite.
# Both create .venv (pip only: it takes torch/torchvision from the local wheel store when there is one).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SDK217 := .cache/sdk-2.17/cvat_sdk/version.py
OFFLINE := HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 YOLO_CONFIG_DIR=$(CURDIR)/.cache/ultralytics

.PHONY: demo test test-sdk217 install bench bench-eval clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[models,postgres,dev,yolo,qa,ray]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/autolabel demo

# The whole suite with the venv's cvat-sdk (the newest the index serves, since pyproject allows
# every 2.x from 2.17; fake CVAT 2.54), then the bridge tests again with the oldest supported
# cvat-sdk (2.17, fake CVAT 2.17), installed beside the venv. tests/test_package.py builds the
# wheel and runs the installed package from a temporary venv.
test: $(STAMP) $(SDK217)
	@$(PY) -c 'import cvat_sdk; print("cvat-sdk", cvat_sdk.__version__)'
	$(OFFLINE) $(PY) -m pytest -q
	$(MAKE) --no-print-directory test-sdk217

# cvat-sdk 2.17 beside the venv (tests/sdk217/install.sh; a no-op once installed)
$(SDK217): $(STAMP)
	PYTHON=$(PY) bash tests/sdk217/install.sh

test-sdk217: $(STAMP) $(SDK217)
	@PYTHONPATH=.cache/sdk-2.17 $(PY) -c 'import cvat_sdk; print("cvat-sdk", cvat_sdk.__version__)'
	PYTHONPATH=.cache/sdk-2.17 $(OFFLINE) $(PY) -m pytest -q tests/sdk217 tests/test_bridge_loop.py \
	  tests/test_bridge_faults.py tests/test_bridge_credentials.py tests/test_cli_cvat.py tests/test_fake_cvat.py \
	  tests/test_eval_delivered.py tests/test_bridge_tls.py tests/test_label_changes.py tests/test_bridge_session.py \
	  tests/test_contract.py tests/test_tags_bridge.py tests/test_qa_review_loop.py

bench: $(STAMP)
	$(OFFLINE) $(PY) bench/pipeline.py

bench-eval: $(STAMP)
	$(OFFLINE) $(PY) bench/eval.py

clean:
	rm -rf $(VENV) .cache out
