# The two commands of the README: `make demo` and `make test`. Each creates .venv when it is
# missing and installs the project with all its dependencies.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pytest options (e.g. make test PYTEST_ARGS="-k export")
PYTEST_ARGS ?=
# pytest-xdist workers of `make test` (tests/conftest.py makes the work units; 0: one process)
TEST_WORKERS ?= 2

.PHONY: install demo test fuzz lint bench clean

install: $(STAMP)

# torch first, pinned: on these machines `torch==2.13.0` is the local CPU build, while a bare
# `torch` requirement would pull gigabytes of CUDA packages.
$(STAMP): pyproject.toml setup.py
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,postgres,parquet]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nas demo

test: $(STAMP)
	$(PY) -m pytest -q -ra --durations=15 -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

# ruff, mypy, and the import contracts of pyproject.toml (what may import what: ARCHITECTURE.md)
# The property-based and API fuzz suites at nightly size (1,000 examples a property; `make test`
# runs the same suites at 20): FUZZ_ARGS="-x" etc. pass through to pytest.
FUZZ_ARGS ?=
fuzz: $(STAMP)
	$(PY) -m pytest -q -ra -m fuzz --hypothesis-profile=nightly -p no:cacheprovider $(FUZZ_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check nas tests experiments
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) experiments/benchmarks/export.py
	$(PY) experiments/benchmarks/supernet_overhead.py
	$(PY) experiments/benchmarks/train_throughput.py

clean:
	rm -rf runs build *.egg-info .pytest_cache .mypy_cache .ruff_cache
