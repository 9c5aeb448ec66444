# shelfsync — build, run, test, bench. `make help` lists the targets.
PKGS     := lua5.4 libmicrohttpd libjwt libcurl libpq openssl zlib jansson yajl libutf8proc
BUILD    ?= build
SAN      ?=
CFLAGS   ?= -O2 -g
WARN     := -Wall -Wextra -Werror
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -llua5.4-cjson -lpthread -lm
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -fPIC $(WARN) $(CFLAGS) $(SAN) $(PKG_CFLAGS)

SRCS     := $(wildcard core/*.c)
OBJS     := $(SRCS:core/%.c=$(BUILD)/obj/%.o)
BIN_OBJS := $(filter-out $(BUILD)/obj/luamod.o,$(OBJS))
MOD_OBJS := $(filter-out $(BUILD)/obj/main.o,$(OBJS))

.PHONY: all build deps run test test-asan check lint clean help fuzz bench-db bench-sync bench-bulk bench-api bench-web bench-enrich pg-start pg-stop

all: build

# Several engineers (and test runs) may build at once: one build at a time per tree.
build:
	@mkdir -p $(BUILD)
	@flock $(BUILD)/.lock $(MAKE) --no-print-directory $(BUILD)/shelfsync $(BUILD)/host.so

$(BUILD)/shelfsync: $(BIN_OBJS)
	@echo "  LINK $@"
	@$(CC) $(SAN) -o $@ $^ $(PKG_LIBS)

$(BUILD)/host.so: $(MOD_OBJS)
	@echo "  LINK $@"
	@$(CC) $(SAN) -shared -o $@ $^ $(PKG_LIBS)

$(BUILD)/obj/%.o: core/%.c $(wildcard core/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC   $<"
	@$(CC) $(ALL_CFLAGS) -c -o $@ $<

deps:              ## install missing Debian packages (and the specs' npm packages)
	@bash scripts/deps.sh

run: deps build    ## serve on http://127.0.0.1:8080 with the embedded PostgreSQL
	@bash scripts/run.sh

test: deps         ## every spec against a throwaway database; ends with "N passed, N failed"
	@bash scripts/test.sh $(SPEC)

test-asan: deps    ## the same specs against an ASan + UBSan build
	@SHELFSYNC_ASAN=1 bash scripts/test.sh $(SPEC)

check: build       ## compile every Lua file (what an operator runs before saving a route)
	@$(BUILD)/shelfsync check

# The C files predate .clang-format, and reformatting them at once would collide with every
# open branch: clang-format checks the C lines a branch changes against LINT_BASE.
LINT_BASE ?= main
lint: deps         ## luacheck over every Lua file; clang-format over the C lines changed since LINT_BASE (main)
	@luacheck --no-color -q lua routes spec bench config.lua
	@out=$$(git clang-format --diff $(LINT_BASE) -- core/ 2>&1); \
	case "$$out" in ""|*"did not modify"*|*"no modified files"*) echo "clang-format: ok (lines changed since $(LINT_BASE))";; \
	*) echo "$$out"; echo "clang-format: run 'git clang-format $(LINT_BASE)' to fix the lines above"; exit 1;; esac

pg-start:          ## start the embedded cluster under var/pg
	@bash scripts/pg.sh start
pg-stop:
	@bash scripts/pg.sh stop

fuzz: deps         ## libFuzzer targets (fuzz/), FUZZ_SECONDS each (default 60); not part of make test
	@bash scripts/fuzz.sh

bench-db: deps build
	@bash scripts/bench-db.sh
bench-sync: deps build
	@bash scripts/bench-sync.sh
bench-bulk: deps build   ## the sync body's decode + validation in-process: cjson + validate.lua vs host.bulk
	@lua5.4 bench/bench_bulk.lua
bench-api: deps build
	@bash scripts/bench-api.sh
bench-web: deps build   ## the web app in headless Chromium, 5,000 titles (first grid, search redraw, bytes)
	@bash scripts/bench-web.sh
bench-enrich: deps build   ## the metadata fetcher against the local provider (figures in bench/RESULTS.md)
	@bash scripts/bench-enrich.sh

clean:
	rm -rf build build-asan build-fuzz

help:
	@grep -E '^[a-z-]+:.*##' Makefile | sed 's/:.*##/ —/'
