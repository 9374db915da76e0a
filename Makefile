# Two commands on a fresh machine: `make run` (the portal, SQLite, web + scheduler) and
# `make test` (the whole suite; PostgreSQL when DATABASE_URL names one).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export DEBUG ?= 1

.PHONY: run test bench lint format install migrate demo clean lab-image messages

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(BIN)/.installed

migrate: install
	$(BIN)/python manage.py migrate --noinput

# The first run on a machine whose engine holds no lab image builds one (make lab-image).
demo: migrate
	$(BIN)/python manage.py seed_demo --build-lab-image
	$(BIN)/python manage.py setup_schedules

run: demo
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@echo "Portal on http://$(HOST):$(PORT)/ (Ctrl-C stops the web server and the scheduler)"
	@# The scheduler runs in its own session so Ctrl-C reaches it once, through the trap.
	setsid $(BIN)/python manage.py qcluster & QPID=$$!; \
	export LAB_PROXY_PORT=$${LAB_PROXY_PORT:-$$(($(PORT) + 1))}; $(BIN)/python manage.py lab_proxy --listen $(HOST):$$LAB_PROXY_PORT --portal http://$(if $(filter 0.0.0.0,$(HOST)),127.0.0.1,$(HOST)):$(PORT) --exit-with-parent & \
	trap 'kill -TERM $$QPID 2>/dev/null; wait $$QPID' EXIT INT TERM; \
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

# The CPU lab image aivc/lab:cpu on the Docker engine that runs (never starts one), offline:
# Debian packages and JupyterLab's wheels, no registry. Its last line is the reference.
lab-image: install
	@PYTHON=$(BIN)/python deploy/images/build-lab-image.sh

test: install
	DEBUG=0 $(BIN)/pytest $(PYTEST_ARGS)

bench: install
	DEBUG=0 $(BIN)/pytest tests/bench -p no:cacheprovider -o addopts="" -s $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tools/check_catalogue.py
	$(BIN)/python -m tests.test_layers

# Regenerates the catalogues with the options the lint check uses, then compiles them;
# translate each new or fuzzy entry in locale/*/LC_MESSAGES/django.po before committing.
messages: install
	$(BIN)/python manage.py makemessages -l zh_Hant --ignore 'tests/*' --ignore 'cli/*' --ignore 'staticfiles/*'
	$(BIN)/python manage.py compilemessages -l zh_Hant

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) staticfiles db.sqlite3 db.sqlite3-wal db.sqlite3-shm
