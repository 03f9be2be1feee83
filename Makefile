# Two entry points do all set-up: `make run` and `make test`.
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.bootstrapped

.PHONY: run test lint bench clean protos

$(STAMP): pyproject.toml scripts/bootstrap.sh scripts/install_bcc.sh
	scripts/bootstrap.sh $(VENV)
	@touch $@

# Python modules generated from proto/ (checked in; tests/agent/grpc/test_generated.py checks freshness).
PROTOS := $(shell find proto -name '*.proto')
GENERATED := agent/grpc/_gen/__init__.py
$(GENERATED): $(PROTOS) scripts/gen_protos.py | $(STAMP)
	$(BIN)/python scripts/gen_protos.py

protos: $(GENERATED)

run: $(STAMP)
	$(BIN)/falco-agent $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
