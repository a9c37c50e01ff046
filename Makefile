# pgrepl: `make up` and `make test` on a fresh machine (see README.md).
# The seed's targets are here too: master-log, slave-log, master-shell, slave-shell.

DIR      ?= $(CURDIR)/.cluster
REPLICAS ?= 2
N        ?= 2
RW_PORT  ?= 5432
RO_PORT  ?= 5433
PGREPL   := ./target/release/pgrepl --dir $(DIR)
# `make image`: the container image (docs/container.md), tagged $(IMAGE):latest and
# $(IMAGE):<the workspace version>, built through a context holding only what it needs.
IMAGE         ?= pgrepl
IMAGE_VERSION ?= $(shell sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml)
IMAGE_CTX     := target/image-context

# `make nemesis`: the long randomized fault run (tests/nemesis.rs): NEMESIS_FAULTS faults of
# NEMESIS_SEED (random and printed when not given), synchronous mode NEMESIS_SYNC (on | off);
# the report goes to target/nemesis/<seed>-sync-<mode>.md. Its 10-fault run of a fixed seed is
# an ordinary test, so `make test` runs it.
NEMESIS_FAULTS ?= 100
NEMESIS_SYNC   ?= on
NEMESIS_SEED   ?=

image_tests := image_seed000 image_seed002 image_bad_env image_compose image_node image_compose_ha image_restricted

.PHONY: setup build image test-image up down destroy status scale test nemesis bench bench-api bench-tls bench-compose bench-rolling logs master-log slave-log master-shell slave-shell

setup:
	@bash scripts/setup.sh

build: setup
	cargo build --release --bin pgrepl

image: build
	rm -rf $(IMAGE_CTX) && mkdir -p $(IMAGE_CTX)
	cp -a image/Dockerfile image/packages image/dpkg.cfg image/rootfs target/release/pgrepl $(IMAGE_CTX)/
	base=$$(bash image/base.sh) && docker build --build-arg BASE=$$base --build-arg VERSION=$(IMAGE_VERSION) \
		-t $(IMAGE):latest -t $(IMAGE):$(IMAGE_VERSION) $(IMAGE_CTX)

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
	@if docker info >/dev/null 2>&1; then $(MAKE) --no-print-directory test-image; \
	 else echo "test: no Docker engine answers here, so the image tests (make test-image) did not run"; fi

# The image tests: real containers of the image on private Docker networks (marked #[ignore]
# so that a plain `cargo test` does not need Docker).
test-image: image
	cargo test -p pgrepl $(addprefix --test ,$(image_tests)) -- --ignored --test-threads=2

nemesis: setup
	NEMESIS_FAULTS=$(NEMESIS_FAULTS) NEMESIS_SYNC=$(NEMESIS_SYNC) $(if $(NEMESIS_SEED),NEMESIS_SEED=$(NEMESIS_SEED)) \
		cargo test -p pgrepl --test nemesis -- --ignored --exact nemesis --nocapture

bench: build
	PGREPL_BENCH=1 bash scripts/setup.sh
	bash bench/run.sh

# `make bench-api`: the HTTP API's cost beside Patroni's (bench/api.sh; docs/benchmarks.md,
# "HTTP API cost"). Its knobs are environment variables, listed in the script's header.
bench-api: build
	PGREPL_BENCH=1 bash scripts/setup.sh
	bash bench/api.sh

# `make bench-tls`: the cost of TLS (pgbench with and without TLS, direct and through rw; docs/benchmarks.md, "TLS cost").
bench-tls: build
	bash bench/tls.sh

# `make bench-compose`: the HA compose cluster (examples/compose/ha) under docker kill and docker
# stop of its primary, beside bench/failover.sh on this machine (bench/compose.sh; docs/benchmarks.md,
# "HA compose cluster"). Uses the image as it is (`make image` builds it); knobs in the script's header.
bench-compose: build
	PGREPL_BENCH=1 bash scripts/setup.sh
	bash bench/compose.sh

# `make bench-rolling`: `pgrepl restart --rolling --pending` after `config set shared_buffers` under
# pgbench -N through rw, in async and synchronous mode, beside an in-place restart of the primary and
# Debian's Patroni's `patronictl restart` (bench/rolling.sh; docs/benchmarks.md, "Rolling restart").
bench-rolling: build
	PGREPL_BENCH=1 bash scripts/setup.sh
	bash bench/rolling.sh
