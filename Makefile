# The two commands of the quick start, and a few more.
#   make up    install what is missing, build, start Kiln, push the sample app
#   make test  the whole test suite (the end-to-end test needs root and runc)

CARGO ?= cargo
DATA_DIR ?= $(CURDIR)/.kiln-data

.PHONY: up down deps build test lint clean-data

up: deps build
	KILN_DATA_DIR=$(DATA_DIR) scripts/up.sh

down:
	@if [ -f $(DATA_DIR)/server.pid ]; then kill -TERM $$(cat $(DATA_DIR)/server.pid) 2>/dev/null || true; rm -f $(DATA_DIR)/server.pid; echo "kiln server stopped"; fi

deps:
	scripts/install-deps.sh

build:
	$(CARGO) build --bin kiln

test: deps
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean-data: down
	rm -rf $(DATA_DIR)
