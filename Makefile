# The two commands a fresh clone needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench check-config clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/opsroom run

check-config: $(STAMP)
	$(BIN)/opsroom check-config

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	@# The SSH tests run real OpenSSH sshd processes on loopback (tests/ssh).
	@if [ ! -x /usr/sbin/sshd ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y --no-install-recommends openssh-server; \
	  else echo "openssh-server is not installed and we are not root: the SSH tests will skip"; fi; \
	fi
	$(BIN)/pytest -n 2 --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/roundtrip.py
	$(BIN)/python bench/jobs.py
	$(BIN)/python bench/audit.py

clean:
	rm -rf $(VENV) data .pytest_cache
