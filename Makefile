# Two entry points do all set-up: `make run` and `make test`.
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.bootstrapped

.PHONY: run test lint typecheck lock bench clean protos

$(STAMP): requirements.lock pyproject.toml scripts/bootstrap.sh scripts/install_bcc.sh scripts/system-packages.txt
	scripts/bootstrap.sh $(VENV)
	@touch $@

# Python modules generated from proto/ (checked in; tests/agent/grpc/test_generated.py checks freshness).
PROTOS := $(shell find proto -name '*.proto')
GENERATED := agent/grpc/_gen/__init__.py
$(GENERATED): $(PROTOS) scripts/gen_protos.py | $(STAMP)
	$(BIN)/python scripts/gen_protos.py

protos: $(GENERATED)

# Only `make lock` asks for this: it needs uv, not a venv matching a pyproject.toml that is being edited.
$(BIN)/uv:
	scripts/bootstrap.sh $(VENV)

run: $(STAMP)
	$(BIN)/falco-agent $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest --cov --cov-report= $(PYTEST_ARGS)
	$(BIN)/falco-agent rules test --quiet --require-cases rules/tests/
	$(BIN)/python scripts/coverage_floor.py

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Every Python dependency (runtime, tests, tools) pinned with hashes for every platform and Python
# 3.11+; edit the ranges in pyproject.toml, then run this and commit both files.
# tests/test_lock.py fails when the two disagree.
lock: | $(BIN)/uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --universal \
		--python-version 3.11 --custom-compile-command "make lock" --quiet -o requirements.lock

bench: $(STAMP)
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
