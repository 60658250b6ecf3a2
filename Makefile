# The two commands of README.md: `make run` (set up + the whole DAG on the embedded default)
# and `make test` (set up + the test suite). Both create .venv/ on first use.
SHELL := /bin/bash
VENV := .venv/bin
CORES ?= 2

.PHONY: setup run test lint report dag gpu-wheels

setup:
	bash envs/setup.sh

run: setup
	$(VENV)/snakemake --cores $(CORES) all
	$(VENV)/snakemake --cores $(CORES) all --report results/report.html
	@echo "report: $$(pwd)/results/report.html  (tables and figures also in results/$$(grep '^run:' config.yaml | awk '{print $$2}')/report/)"

test: setup
	$(VENV)/python -m pytest -v -rs --durations=15 tests

lint: setup
	$(VENV)/ruff check stages tests envs benchmarks docs
	$(VENV)/python -m tests.snakemake_lint

# The DAG picture of docs/design.md, redrawn from the rules (tests/pipeline/test_architecture.py checks it is current).
dag: setup
	$(VENV)/snakemake --rulegraph mermaid-js -- paper_tables | $(VENV)/python docs/rulegraph.py docs/design.md

# The wheels the GPU machine lacks (.whl/, git-ignored), for benchmarks/gpu_check.sh.
gpu-wheels: setup
	bash envs/gpu_wheels.sh
