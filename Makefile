# pgrepl: `make up` and `make test` on a fresh machine (see README.md).
# The seed's targets are here too: master-log, slave-log, master-shell, slave-shell.

DIR      ?= $(CURDIR)/.cluster
REPLICAS ?= 2
N        ?= 2
RW_PORT  ?= 5432
RO_PORT  ?= 5433
PGREPL   := ./target/release/pgrepl --dir $(DIR)

.PHONY: setup build up down destroy status scale test bench logs master-log slave-log master-shell slave-shell

setup:
	@bash scripts/setup.sh

build: setup
	cargo build --release --bin pgrepl

up: build
	$(PGREPL) up --replicas $(REPLICAS) --port $(RW_PORT) --ro-port $(RO_PORT)

down:
	$(PGREPL) down

destroy:
	$(PGREPL) down --destroy

status:
	$(PGREPL) status

scale:
	$(PGREPL) scale $(N)

master-log:
	$(PGREPL) logs $$($(PGREPL) status --json | sed -n 's/.*"leader": "\(.*\)".*/\1/p')

slave-log:
	$(PGREPL) logs $$($(PGREPL) status --json | grep -B3 '"role": "replica"' | sed -n 's/.*"name": "\(.*\)".*/\1/p' | head -1)

master-shell:
	$(PGREPL) psql

slave-shell:
	$(PGREPL) psql --ro

test: setup
	cargo test --workspace --no-fail-fast

bench: build
	PGREPL_BENCH=1 bash scripts/setup.sh
	bash bench/run.sh
