# MonitorX: `make demo` runs the whole pipeline locally, `make test` runs lint and tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint unit bench bench-backtest clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v redis-server >/dev/null 2>&1 || ./deploy/install-redis.sh
	@command -v chromium >/dev/null 2>&1 || ./deploy/install-chromium.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==25.3
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/monitorx demo $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: install
	@$(BIN)/pytest -q $(ARGS); code=$$?; \
	if [ $$code -eq 5 ]; then echo "make unit: pytest collected no tests: failing" >&2; exit 1; fi; \
	exit $$code

test: lint unit

# Two JSON lines: the saturating pipeline against bare RQ, then the quiet desk against the
# in-process baseline (monitorx bench --help).
bench: install
	$(BIN)/monitorx bench $(ARGS)
	$(BIN)/monitorx bench --scenario quiet-desk $(ARGS)

# A simulated day through `monitorx backtest` (generates a 10.6 GiB recording in /tmp once);
# ARGS="--frames 60000" for a shorter run extrapolated to the day.
bench-backtest: install
	$(BIN)/python -m monitorx.backtest_bench --jobs 1,2 $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
