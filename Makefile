# The two commands a fresh clone needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench check-config clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/opsroom run

check-config: $(STAMP)
	$(BIN)/opsroom check-config

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n 2 --dist loadgroup

# Real servers the tests start on loopback (tests/ssh, tests/alerts), from Debian's packages:
# "command-or-path:package" pairs. Missing ones are installed with one apt-get update.
SYSTEM_PACKAGES := /usr/sbin/sshd:openssh-server prometheus:prometheus \
	prometheus-alertmanager:prometheus-alertmanager

system-deps:
	@missing=""; \
	for pair in $(SYSTEM_PACKAGES); do \
	  cmd=$${pair%%:*}; pkg=$${pair#*:}; \
	  [ -x "$$cmd" ] || command -v "$$cmd" >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y --no-install-recommends $$missing; \
	  else echo "not root, cannot install:$$missing (their tests skip; with CI=true they fail)"; fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/roundtrip.py
	$(BIN)/python bench/jobs.py
	$(BIN)/python bench/audit.py
	$(BIN)/python bench/alerts.py
	$(BIN)/python bench/kubernetes.py
	$(BIN)/python bench/jenkins.py

clean:
	rm -rf $(VENV) data .pytest_cache
