# mantis: the two commands of the quick start are `make demo` and `make test`.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: install install-dev demo test lint slow clean

install:
	bash scripts/install.sh

install-dev:
	bash scripts/install.sh --dev

## make demo: install, then run the end-to-end demo
demo: install
	$(PY) -m demo

## make test: install (with test tools), lint, then the default (non-slow) test suite
test: install-dev
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

## make slow: the tests marked slow as well
slow: install-dev
	$(PY) -m pytest -m "slow or not slow" $(PYTEST_ARGS)

clean:
	rm -rf .venv .pytest_cache .ruff_cache
