# socnoc — the two set-up commands are `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The core compiled with mypyc (scripts/build_native.py, schemas/native.py): rebuilt whenever a
# source of `correlators`, `schemas` or `streams` changes; without a C compiler, pure Python.
NATIVE := build/native/manifest.json
NATIVE_SOURCES := $(shell find correlators schemas streams -name "*.py") scripts/build_native.py

.PHONY: run test lint typecheck pytest bench soak fuzz eval audit schemas clean native

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

$(NATIVE): $(STAMP) $(NATIVE_SOURCES)
	$(BIN)/python scripts/build_native.py

native: $(NATIVE)

run: $(STAMP) $(NATIVE)
	$(BIN)/socnoc run

test: $(STAMP) $(NATIVE)
	sh scripts/ensure-system-packages.sh
	$(BIN)/ruff check streams correlators schemas tests bench scripts
	$(BIN)/mypy streams correlators schemas bench scripts/build_native.py
	$(BIN)/python -m pytest -q -p no:cacheprovider
	SOCNOC_PURE_PYTHON=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/correlators tests/schemas tests/streams

lint: $(STAMP)
	$(BIN)/ruff check streams correlators schemas tests bench scripts

schemas: $(STAMP)
	$(BIN)/python -m schemas.export

eval: $(STAMP) $(NATIVE)
	$(BIN)/socnoc evaluate --all --out build/eval

bench: $(STAMP) $(NATIVE)
	$(BIN)/python -m bench.run

soak: $(STAMP) $(NATIVE)
	@$(BIN)/python -m bench.soak

fuzz: $(STAMP) $(NATIVE)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-100000} $(BIN)/python -m pytest -q -p no:cacheprovider -o timeout=0 tests/fuzz

audit: $(STAMP)
	sh scripts/audit.sh

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache
