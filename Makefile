# reportsvc: `make run` starts it with demo data, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
DOCS_PORT ?= 8001

.PHONY: run test lint format bench docs docs-build screenshot clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

## run: install, migrate, seed demo data, then web server + worker (Ctrl-C stops both)
# It remembers the databases it serves and its address (var/make-run.env,
# var/make-run.address), so manage.py and the docs' commands in another terminal reach
# them. The last line execs the supervisor (reportsvc/localrun.py), so it is make's own
# child: Ctrl-C reaches it, and so does `kill <make's pid>` (make passes SIGTERM on to
# its children and waits for them). It stops the web server and the worker, a run in
# progress finishing within the worker's shutdown grace, frees the port, ends with
# "Stopped." and exits 0 (1 when a process failed).
run: export DEBUG ?= 1
run: export HOST := $(HOST)
run: export PORT := $(PORT)
run: export PUBLIC_BASE_URL ?= http://$(if $(filter 0.0.0.0 ::,$(HOST)),127.0.0.1,$(HOST)):$(PORT)
run: $(BIN)/.installed
	$(BIN)/python -m reportsvc.localrun remember-databases
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	@PATH="$(abspath $(BIN)):$$PATH" exec $(BIN)/python -m reportsvc.localrun serve Procfile

## test: the whole test suite (SQLite by default; set DATABASE_URL for PostgreSQL),
## in parallel test processes, each with databases of its own
test: export SECRET_KEY ?= insecure-test-key
# Each test process, and each server or worker a test starts, would otherwise compile the
# project and rewrite the tests' asserts anew where the environment turns caches off.
test: export PYTHONDONTWRITEBYTECODE :=
test: $(BIN)/.installed
	$(BIN)/pytest -n auto --dist loadgroup --durations=5

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## bench: export benchmark against PostgreSQL (DATABASE_URL, default local postgres)
bench: $(BIN)/.installed
	$(BIN)/python bench/export.py

## docs: the documentation site on http://127.0.0.1:$(DOCS_PORT)/, rebuilt as docs/ changes
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:$(DOCS_PORT)

## docs-build: the site into var/site/, strictly: a broken link, anchor or page fails (CI)
docs-build: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --clean

## screenshot: docs/admin-reports.png anew from the demo (Playwright, the system Chromium)
screenshot: $(BIN)/.installed
	$(BIN)/python tools/screenshot.py

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache .ruff_cache

# The admin's SQL editor (CodeMirror), bundled into static/reportsvc/sql-editor.js: run
# after changing assets/sql-editor (its package.json pins what is bundled).
.PHONY: editor
editor:
	cd assets/sql-editor && npm ci --no-audit --no-fund && npm run build
