# socnoc — the two set-up commands are `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench soak fuzz eval audit schemas clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/socnoc run

test: $(STAMP)
	sh scripts/ensure-system-packages.sh
	$(BIN)/ruff check streams correlators schemas tests bench
	$(BIN)/mypy streams correlators schemas bench
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check streams correlators schemas tests bench

schemas: $(STAMP)
	$(BIN)/python -m schemas.export

eval: $(STAMP)
	$(BIN)/socnoc evaluate --all --out build/eval

bench: $(STAMP)
	$(BIN)/python -m bench.run

soak: $(STAMP)
	@$(BIN)/python -m bench.soak

fuzz: $(STAMP)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-100000} $(BIN)/python -m pytest -q -p no:cacheprovider -o timeout=0 tests/fuzz

audit: $(STAMP)
	sh scripts/audit.sh

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache
