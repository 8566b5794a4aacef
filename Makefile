# Two commands on a fresh machine: `make train` and `make test`. Each creates .venv and
# installs cadence with its pinned dependencies first (once; again when they change).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PIP_INSTALL := $(BIN)/python -m pip install --quiet --constraint constraints.txt

.PHONY: train test bench install clean browser

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --editable '.[test]'
	touch $(INSTALLED)

install: $(INSTALLED)

# The main job: train the FSDD spoken-digit recognizer, test it, print where it went.
train: $(INSTALLED)
	$(BIN)/cadence train recipes/fsdd/digits.yaml

# The report test opens a page in a real headless browser: Chromium from the distribution's
# packages, installed once when missing (as root; apt's lists fetched first).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ apt-get update -q && apt-get install -y -q chromium; } || \
	{ echo "error: the report test needs Chromium: install the chromium package" >&2; exit 1; }

# The test suite; "no tests collected" (pytest's exit code 5) counts as a failure.
test: $(INSTALLED) browser
	$(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "error: no tests were collected" >&2; exit 1; fi; exit $$status

# Benchmarks (see BENCHMARKS.md); pytorch-lightning is only installed for these.
bench: $(INSTALLED)
	$(PIP_INSTALL) --editable '.[bench]'
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/fsdd_accuracy.py
	$(BIN)/python benchmarks/padding.py
	$(BIN)/python benchmarks/loader.py
	$(BIN)/python benchmarks/resume.py
	$(BIN)/python benchmarks/error_rate.py
	$(BIN)/python benchmarks/asr.py

clean:
	rm -rf $(VENV) runs
