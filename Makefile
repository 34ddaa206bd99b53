# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
UV      = $(VENV)/bin/uv
CONSTRAINTS = constraints.txt

.PHONY: demo test test-integration bench install install-dev lock clean

$(VENV)/bin/uv:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check "uv>=0.5,<1"

$(VENV)/.installed: $(VENV)/bin/uv pyproject.toml $(CONSTRAINTS)
	$(UV) pip install --quiet --python $(PY) -c $(CONSTRAINTS) -e ".[dev]"
	touch $@

install install-dev: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/tess-pipeline demo

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

# The pipeline against a real S3 server (Ceph RADOS Gateway, scripts/s3-server.sh) and nx-27017.
test-integration: $(VENV)/.installed
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

# Benchmarks print figures (ratios against baselines measured in the same run).
bench: $(VENV)/.installed
	$(PY) bench/ingest.py
	$(PY) bench/background.py
	$(PY) bench/apertures.py
	$(PY) bench/run.py
	$(PY) bench/api.py

# Re-resolve the working set (run when pyproject.toml's ranges change).
lock: $(VENV)/bin/uv
	$(UV) pip compile --quiet --python $(PY) --extra dev pyproject.toml -o $(CONSTRAINTS)

clean:
	rm -rf $(VENV) tess-data .pytest_cache
