# Two commands on a fresh machine: `make run` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The local BigQuery + GCS stack (its own Python 3.13 environment; docs/local-stack.md).
LOCALSTACK_STAMP := .venv-localbq/.setup-stamp

.PHONY: run test test-fast bench schema lint clean setup localstack chromium sshd

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt clients/python/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e clients/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

localstack: $(LOCALSTACK_STAMP)

$(LOCALSTACK_STAMP): scripts/setup-localstack.sh localstack/constraints-localbq.txt
	bash scripts/setup-localstack.sh

# Debian's Chromium for the browser tests (tests/browser), installed only when missing.
chromium:
	bash scripts/install-chromium.sh

# Debian's OpenSSH server for the Git-over-ssh tests (tests/ssh_server.py), installed only when missing.
sshd:
	bash scripts/install-sshd.sh

run: setup localstack
	$(BIN)/maestro serve

test: setup localstack chromium sshd
	$(BIN)/pytest

# Skips the slow torture/crash tests; `make test` runs everything.
test-fast: setup localstack chromium sshd
	$(BIN)/pytest -m "not slow"

bench: setup localstack
	$(BIN)/python -m bench.bench_store
	$(BIN)/python -m bench.bench_catalog
	$(BIN)/python bench/bench_graph.py
	$(BIN)/python -m bench.bench_scheduler
	$(BIN)/python -m bench.bench_auth
	$(BIN)/python -m bench.bench_runs
	$(BIN)/python -m bench.bench_import_sink
	$(BIN)/python -m bench.bench_import_read
	$(BIN)/python -m bench.bench_import_e2e
	$(BIN)/python -m bench.bench_db_export
	$(BIN)/python -m bench.bench_callbacks
	$(BIN)/python -m bench.bench_ui
	$(BIN)/python -m bench.bench_slack
	$(BIN)/python -m bench.bench_git

# Regenerate sql/schema.sql from the numbered migrations (tests fail until it matches).
schema: setup
	$(BIN)/python scripts/dump_schema.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
