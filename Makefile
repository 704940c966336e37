# Nudged: `make run` starts the whole system, `make test` runs the whole test suite.
.PHONY: run test lint screenshots bench help

help:
	@echo "make run         - set everything up and start Nudged on http://127.0.0.1:$${PORT:-8000}"
	@echo "make test        - run the whole test suite against MySQL and a local AWS endpoint"
	@echo "make lint        - ruff check and format check, mypy, import contracts, cfn-lint on deploy/nudged.yaml"
	@echo "make screenshots - refresh docs/screenshots from the browser tests"
	@echo "make bench       - order throughput benchmark (docs/performance.md)"

run:
	@bin/setup run
	@bin/run

test:
	@bin/setup test
	@bin/test

lint:
	@bin/setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports
	.venv/bin/cfn-lint deploy/nudged.yaml

screenshots:
	@bin/setup test
	SCREENSHOTS_DIR=docs/screenshots bin/test tests/browser

bench:
	@bin/setup
	.venv/bin/python bench/orders.py
