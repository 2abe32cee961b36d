# Lumilio host: build, test and run.      `make help` lists the targets.
#
#   make run     start the database, build, migrate, serve on 127.0.0.1:8080
#   make test    start the database, build host + plugins + test guests, run all tests
#
# The database is the project's own PostgreSQL 18 + pgvector (scripts/db.sh), unless
# DATABASE_URL is already set, in which case that database is used.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:
.DEFAULT_GOAL := help

CARGO       ?= cargo
WASM_TARGET := wasm32-wasip2
RUN_ARGS    ?=
TEST_ARGS   ?=

# Plugin packages: one per plugins/*/Cargo.toml that builds a component (a
# `cdylib`), by its [package] name; plugins/sdk is a library and is left out.
PLUGINS = $(foreach f,$(shell grep -l '^crate-type *=.*"cdylib"' plugins/*/Cargo.toml),$(shell sed -n 's/^name *= *"\([^"]*\)".*/\1/p' $(f) | head -n1))

# Start (or reuse) the database and export DATABASE_URL into the recipe's shell.
# An assignment, not `eval "$(...)"`, so that a failing db.sh stops the recipe.
WITH_DB = db_line=$$(scripts/db.sh); eval "$$db_line"; export DATABASE_URL

.PHONY: help db db-stop psql host plugins py-stages wasm-target build guests migrate run test test-tools bench soak clean-db exiftool-refs heic-refs

help:
	@echo "make run        database + build + migrate, then serve (127.0.0.1:8080)"
	@echo "make test       database + build + guests, then cargo test --release --workspace (and the vendored jpeg-decoder)"
	@echo "make db         start the database; print DATABASE_URL=..."
	@echo "make db-stop    stop the database server (data kept)"
	@echo "make clean-db   stop the server and delete the cluster"
	@echo "make psql       psql on the database"
	@echo "make build      host (target/release/lumilio) + plugins (target/$(WASM_TARGET)/release/*.wasm)"
	@echo "make guests     hostile test guests (tests/guests/build.sh)"
	@echo "make py-stages  stages written in Python (plugins-py/*, componentize-py) -> target/py-stages/*.wasm"
	@echo "make migrate    apply migrations on lines main and app"
	@echo "make bench      scripts/bench.sh (installs its peers vips, exiftool, heif-convert when root)"
	@echo "make exiftool-refs  regenerate tests/data/photos/exiftool-refs.json with exiftool"
	@echo "make heic-refs  regenerate plugins/thumbnail/tests/heic-refs with libheif and vips"
	@echo "make soak       the long kill -9 loop: 1000 uploads, 40 kills (make test runs 200 and 10)"

db:
	@scripts/db.sh

db-stop:
	scripts/db.sh stop

psql:
	@scripts/db.sh psql

clean-db:
	scripts/db.sh destroy

host:
	$(CARGO) build --release

# The plugins' target, added with rustup when it is missing.
wasm-target:
	@if ! command -v rustup >/dev/null; then
	  if rustc --print target-list 2>/dev/null | grep -qx $(WASM_TARGET) && \
	     [ -d "$$(rustc --print sysroot)/lib/rustlib/$(WASM_TARGET)" ]; then exit 0; fi
	  echo "error: the $(WASM_TARGET) target is missing and there is no rustup to add it." >&2
	  echo "Install Rust with rustup (https://rustup.rs), then: rustup target add $(WASM_TARGET)" >&2
	  exit 1
	fi
	if ! rustup target list --installed | grep -qx $(WASM_TARGET); then
	  echo "adding the Rust target $(WASM_TARGET) (rustup target add $(WASM_TARGET))"
	  rustup target add $(WASM_TARGET)
	fi

plugins: wasm-target
	$(CARGO) build --release --target $(WASM_TARGET) $(foreach p,$(PLUGINS),-p $(p))

build: host plugins

# Stages written in Python (plugins-py/*), built with componentize-py from PyPI
# (scripts/componentize-py.sh). Optional stages, not in the default pipeline.toml,
# so `make build` leaves them out; the tests use them.
py-stages:
	for d in plugins-py/*/; do scripts/componentize-py.sh "$$(basename "$$d")" >/dev/null; done

guests: wasm-target
	bash tests/guests/build.sh

migrate: host
	$(WITH_DB)
	target/release/lumilio migrate-up --line main
	target/release/lumilio migrate-up --line app

run: build migrate
	$(WITH_DB)
	key=$$(target/release/lumilio user dev-key dev --file .local/dev-api-key)
	listen=$${LUMILIO_LISTEN:-127.0.0.1:8080}
	echo "dev user's API key (kept in .local/dev-api-key):"
	echo "  $$key"
	echo "  curl -H 'Authorization: Bearer $$key' -F file=@photo.jpg http://$$listen/api/v1/assets"
	echo "web app: open http://$$listen/ and paste the key above to sign in"
	# Without an inference service of your own, run the reference one beside the host.
	if [ -z "$${ML_SERVICE_ADDR:-}" ]; then
	  target/release/lumilio-infer --listen 127.0.0.1:50051 &
	  infer_pid=$$!
	  trap 'kill $$infer_pid 2>/dev/null' EXIT
	  export ML_SERVICE_ADDR=http://127.0.0.1:50051
	fi
	target/release/lumilio serve $(RUN_ARGS)

# What the tests need beyond the build: Node 22+ and the Immich CLI for the
# Immich e2e test, into .local/ (git-ignored); Debian's Chromium and its
# WebDriver for the browser tests (apt-get when root, else the command to run).
test-tools:
	scripts/immich-cli.sh >/dev/null
	scripts/apt-need.sh chromium:chromium chromedriver:chromium-driver

test: build guests py-stages test-tools
	$(WITH_DB)
	$(CARGO) test --release --workspace $(TEST_ARGS)
	# The vendored decoder and code generator are not workspace members;
	# their own tests cover what we changed.
	$(CARGO) test --release -p jpeg-decoder --lib
	$(CARGO) test --release -p wasmtime-internal-cranelift --lib zero_shuffles

bench: wasm-target test-tools
	$(WITH_DB)
	exec bash scripts/bench.sh

exiftool-refs:
	scripts/exiftool-refs.sh

heic-refs:
	scripts/heic-refs.sh

soak: build
	$(WITH_DB)
	LUMILIO_SOAK_UPLOADS=1000 LUMILIO_SOAK_KILLS=40 $(CARGO) test --release --workspace --test e2e kill_9 -- --nocapture
