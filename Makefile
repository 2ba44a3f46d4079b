# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SAMPLE := Resources/SampleData/aasce-sample-AP.jpg

.PHONY: setup demo test test-fast benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Exactly this torch: any looser requirement makes pip fetch a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	# DICOM validators for the SR/SEG tests (dciodvfy, dsrdump); as root only, tests skip without them.
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v dciodvfy >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dicom3tools dcmtk >/dev/null) \
		|| echo "note: dicom3tools/dcmtk not installed; the DICOM validator tests will be skipped"; fi
	# Headless browser for the review page's test (chromium); as root only, the test skips without it.
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v chromium >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "note: chromium not installed; the review page's browser test will be skipped"; fi
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/spine-align analyze --protocol coronal-spine --markups --out out/demo $(SAMPLE)
	@echo "Results in out/demo (result JSON, summary CSV, overlay PNG, Slicer markups)."

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile -q Testing/Python

benchmark: $(STAMP)
	$(PY) Testing/Python/benchmark_inference.py

clean:
	rm -rf $(VENV) out .pytest_cache
