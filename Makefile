# Every target sets itself up: a venv in .venv with `pip install -e .[dev]`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# keras-hub is a test dependency installed with --no-deps: its declared deps pull
# tensorflow + tensorflow-text next to tensorflow-cpu (what it needs is in [dev])
KERAS_HUB_VERSION := 0.32.0

.PHONY: setup test test-fast fuzz demo bench clean

$(STAMP): setup.cfg pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .[dev]
	$(PY) -m pip install -q --no-deps keras-hub==$(KERAS_HUB_VERSION)
	touch $(STAMP)

setup: $(STAMP)

# the suite in TEST_WORKERS processes (pytest-xdist; 0 = one process)
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=12

# the edit-test loop: the suite without the tests marked slow (studies, jobs of several
# processes, subprocess checks); `make test` and .ci/run still run everything
test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow" --durations=5

# the property-based tests with many more examples (about 10 minutes here)
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=long $(PY) -m pytest -q tests/test_properties.py tests/test_selection.py

demo: $(STAMP)
	$(PY) scripts/demo.py --output_dir=out/demo

bench: $(STAMP)
	$(PY) benchmarks/core.py

clean:
	rm -rf $(VENV) out *.egg-info
