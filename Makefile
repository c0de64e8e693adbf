# blockd — the two commands a newcomer needs are `make run` and `make test`.
# Every target sets up what it needs: the virtualenv, pinned dependencies, test servers.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit demo demo-feeds bench bench-compile bench-mapped bench-dns bench-workers bench-http bench-audit bench-hello bench-rpz bench-encrypted bench-fleet clean help venv quick

help:
	@echo "make run          start blockd on the demo policy (DNS :5300, HTTP :8080, HTTPS :8443)"
	@echo "make demo         the offline demo: sync the demo lists and print verdicts"
	@echo "make test         lint, type-check and run the whole test suite"
	@echo "make quick        the inner loop: tests that need no server, process or browser"
	@echo "make demo-feeds   re-sign the demo authority's lists in feeds/demo"
	@echo "make bench        run the benchmarks in bench/ (slow)"

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "blockd needs Python >= 3.11 (found $$($(PYTHON) --version))"; exit 1; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || tools/ensure-deb python3-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/blockd run --config config/blockd.toml

lint: $(STAMP)
	$(BIN)/ruff check blockd tests bench
	$(BIN)/ruff format --check blockd tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

quick: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

demo: $(STAMP)
	$(BIN)/blockd demo

demo-feeds: $(STAMP)
	$(BIN)/python -m blockd.demo feeds/demo

bench: bench-compile bench-mapped bench-dns bench-workers bench-http bench-audit bench-hello bench-rpz bench-encrypted bench-fleet

bench-compile: $(STAMP)
	$(BIN)/python bench/policy_bench.py

bench-mapped: $(STAMP)
	$(BIN)/python bench/mapped_bench.py

bench-dns: $(STAMP)
	$(BIN)/python bench/dns_bench.py

bench-workers: $(STAMP)
	$(BIN)/python bench/workers_bench.py

bench-http: $(STAMP)
	$(BIN)/python bench/http_bench.py
	$(BIN)/python bench/url_check_bench.py

bench-audit: $(STAMP)
	$(BIN)/python bench/audit_bench.py

bench-hello: $(STAMP)
	$(BIN)/python bench/hello_bench.py

bench-rpz: $(STAMP)
	$(BIN)/python bench/rpz_bench.py

bench-encrypted: $(STAMP)
	$(BIN)/python bench/encrypted_bench.py

bench-fleet: $(STAMP)
	$(BIN)/python bench/fleet_bench.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
