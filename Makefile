# Every target creates its own virtual environment in .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUT ?= virolbi-demo

.PHONY: all install demo test test-fast bench clean

all: test

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test,demo,tensorboard,attacks,explain,ode]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/virolbi demo --output-dir $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_smoother.py

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .pytest_cache
