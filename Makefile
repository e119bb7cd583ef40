# make run   - set up (once) and start the server on the embedded default, port 5000
# make test  - set up (once) and run the test suite on SQLite (and MariaDB when it is installed)
# make test-fast - the unit tests only, for the edit loop
# make mutation - would the fast tests notice a one-line slip in the money and access code? (slow; docs/mutation.md)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The interpreter the virtualenvs are made from: 3.11 or 3.12 (hyperon 0.2.10, the MeTTa engine,
# ships wheels for CPython 3.10 to 3.12 only, and the code needs 3.11). Another: make PYTHON=python3.12
PYTHON ?= python3
PYTHON_OK := import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 11) <= v <= (3, 12) else \
	"$(PYTHON) is Python %d.%d: this project needs Python 3.11 or 3.12 (hyperon, the MeTTa engine, has no wheel " \
	"for other versions). Install Python 3.11 or 3.12 and run, for example: make PYTHON=python3.11" % v)
# A real LNbits for the Lightning tests, in its own virtualenv (its pins clash with ours).
LNBITS_VENV ?= .lnbits-venv
LNBITS_STAMP := $(LNBITS_VENV)/.installed

.PHONY: run test test-fast mutation test-sqlite test-mysql test-galera stack lint bench clean golden-update lock env-example

# The app and its tests at the versions of requirements-dev.lock, each file checked against its
# hash; then the project itself, editable, for the `satspesa` command (.venv/bin/satspesa).
$(STAMP): requirements-dev.lock pyproject.toml
	@$(PYTHON) -c '$(PYTHON_OK)'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The locks, with every file's hash: requirements.lock (requirements.txt: what the image installs)
# and requirements-dev.lock (requirements-dev.txt at the same versions: what `make` installs).
# A version already locked stays (uv keeps the output file's pins); to move one:
#   make lock LOCK_ARGS="--upgrade-package flask"
UV_VERSION := 0.13.9
LOCK_ARGS ?=
lock:
	@$(PYTHON) -c '$(PYTHON_OK)'
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q "uv==$(UV_VERSION)"
	.lock-venv/bin/uv pip compile -q --generate-hashes --python-version 3.11 --custom-compile-command "make lock" \
		$(LOCK_ARGS) -o requirements.lock requirements.txt
	.lock-venv/bin/uv pip compile -q --generate-hashes --python-version 3.11 --custom-compile-command "make lock" \
		$(LOCK_ARGS) -c requirements.lock -o requirements-dev.lock requirements-dev.txt
	rm -rf .lock-venv

$(LNBITS_STAMP):
	$(PYTHON) -m venv $(LNBITS_VENV)
	$(LNBITS_VENV)/bin/python -m pip install -q "lnbits==1.6.2" "bitstring<5"
	touch $(LNBITS_STAMP)

run: $(STAMP)
	$(PY) app.py

test: test-sqlite
	@if command -v mariadbd >/dev/null 2>&1 || command -v mysqld >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory test-mysql; \
	else \
		echo "MariaDB not installed: skipped the MySQL run (apt-get install mariadb-server)"; \
	fi

# The edit loop: unit tests only (no real servers), on SQLite, in well under a minute.
test-fast: $(STAMP)
	$(PY) -m pytest tests/unit -m "not slow" -n 2

# Mutants of the money and access code against the fast tests (scripts/mutation.py): about 200,
# tens of minutes on two cores, so not part of `make test` or CI. It writes the score and the
# survivors to docs/mutation.md and fails if a mutant killed before survives now.
# MUTATION_ARGS="--named" runs the named mutants of issue 31 only (a few minutes).
MUTATION_ARGS ?= --confirm
mutation: $(STAMP)
	$(PY) scripts/mutation.py $(MUTATION_ARGS)

test-sqlite: $(STAMP) $(LNBITS_STAMP)
	$(PY) -m pytest

test-mysql: $(STAMP) $(LNBITS_STAMP)
	scripts/mariadb_local.sh $(PY) -m pytest

# The production topology from local processes: MariaDB, two web instances, one worker.
stack: $(STAMP)
	scripts/stack.sh

# A 3-node MariaDB Galera cluster on loopback (galera-4, rsync): the money races with the two app
# instances on two nodes, replays across nodes, and a node killed under traffic.
test-galera: $(STAMP)
	scripts/galera_local.sh $(PY) -m pytest tests/integration/test_galera.py tests/integration/test_concurrency.py

# The benchmark (not a test): wrk against gunicorn, SQLite and a throwaway MariaDB; see bench/run.py.
bench: $(STAMP)
	command -v wrk >/dev/null || apt-get install -y wrk
	scripts/mariadb_local.sh $(PY) bench/run.py
	@echo "--- CPU ms and SQL statements per USSD step, in process (SQLite, then MariaDB)"
	$(PY) bench/cost.py --steps
	scripts/mariadb_local.sh sh -c '$(PY) bench/cost.py --steps --database-url "$$TEST_DATABASE_URL"'

# Re-record the golden USSD transcripts (only when a screen is meant to change; read the diff).
golden-update: $(STAMP)
	GOLDEN_UPDATE=1 $(PY) -m pytest tests/unit/test_golden_transcripts.py

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) scripts/env_example.py --check

# Write .env.example again from the settings' declaration (helpers/infra/settings.py).
env-example: $(STAMP)
	$(PY) scripts/env_example.py

clean:
	rm -rf $(VENV) $(LNBITS_VENV) instance .pytest_cache .ruff_cache
