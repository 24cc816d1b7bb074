# Two commands do all set-up on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test lint typecheck unit bench bench-full bench-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/tlog serve --data ./data --host 127.0.0.1 --port 8080

test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check tlog verifier tests bench
	$(BIN)/ruff format --check tlog verifier tests bench

typecheck: $(STAMP)
	$(BIN)/mypy tlog verifier

unit: $(STAMP)
	$(BIN)/pytest -q

# The [bench] extra (matplotlib for the plots, pymerkle as a peer) is optional: without
# it the suite still runs and the results say what was skipped.
bench-deps: $(STAMP)
	@$(BIN)/python -c 'import matplotlib, pymerkle' 2>/dev/null || \
	  $(BIN)/pip install --quiet -e '.[bench]' || \
	  echo "bench: could not install the [bench] extra (matplotlib, pymerkle); going on without it"

# Quick suite (under 10 minutes on 2 cores) and the long one (about 40 minutes: its scale
# curve goes to 10^8 when the disk has ~66 GB free, which is half of that time;
# SCALE_MAX_SIZE=10000000 stops it at 10^7, about 22 minutes); both write
# bench/results/<date>.json and regenerate docs/benchmarks.md and its plots.
bench: bench-deps
	$(BIN)/python bench/run_all.py --quick

bench-full: bench-deps
	$(BIN)/python bench/run_all.py $(if $(SCALE_MAX_SIZE),--scale-max-size $(SCALE_MAX_SIZE))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
