# herold: one Makefile for the broker, the clients, the tests and the benchmarks.
# `make` builds build/herold, build/herold-pub and build/herold-tail.
# `make run` installs what is missing, builds and starts the broker.
# `make check` installs what is missing, builds, runs every test, then runs them all again
# built with AddressSanitizer and UndefinedBehaviorSanitizer (build/asan/), then the unit
# and end-to-end tests built with ThreadSanitizer (build/tsan/).

PKGS      := libzmq msgpack libwebsockets jansson openssl libcurl libpq
# Debian packages that provide the build and test dependencies.
DEB_PKGS  := build-essential pkg-config libzmq3-dev libmsgpack-dev libwebsockets-dev \
             libwebsockets-evlib-ev libev-dev \
             libssl-dev libjansson-dev libcurl4-openssl-dev libxxhash-dev check python3 \
             python3-pytest python3-zmq python3-msgpack python3-websockets python3-cryptography \
             openssl curl libpq-dev postgresql-15 chromium
# What `make bench` adds: the peers it measures herold against, and gnuplot for the plots.
BENCH_DEB_PKGS := mosquitto nats-server redis-server gnuplot-nox
# What `make fuzz` adds: clang and its libFuzzer runtime.
FUZZ_DEB_PKGS := clang libclang-rt-14-dev

CC        ?= cc
WARN      := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
BASEFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) -g -MMD -MP -Ibroker
OPTFLAGS  := -O2
SANFLAGS  := -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
TSANFLAGS := -O1 -fsanitize=thread -fno-omit-frame-pointer

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
# libev has no pkg-config file; libwebsockets runs its loop through it (http.c).
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lev -lpthread
CHECK_LIBS = $(shell pkg-config --libs check 2>/dev/null)

# BUILD selects the flavour: build/ (optimised), build/asan/ (AddressSanitizer and
# UndefinedBehaviorSanitizer) or build/tsan/ (ThreadSanitizer).
BUILD     ?= build
ifeq ($(BUILD),build/asan)
  MODEFLAGS := $(SANFLAGS)
  MODELDFLAGS := -fsanitize=address,undefined
else ifeq ($(BUILD),build/tsan)
  MODEFLAGS := $(TSANFLAGS)
  MODELDFLAGS := -fsanitize=thread
else
  MODEFLAGS := $(OPTFLAGS)
  MODELDFLAGS :=
endif
CFLAGS_ALL = $(BASEFLAGS) $(MODEFLAGS) $(PKG_CFLAGS) $(CFLAGS)
LDFLAGS_ALL = $(MODELDFLAGS) $(LDFLAGS)

BROKER_SRCS := $(filter-out broker/main.c,$(wildcard broker/*.c))
BROKER_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(BROKER_SRCS))
CORE_LIB    := $(BUILD)/libherold-core.a
CLIENT_SRCS := $(wildcard clients/*.c)
CLIENT_BINS := $(patsubst clients/%.c,$(BUILD)/%,$(CLIENT_SRCS))
UNIT_SRCS   := $(wildcard tests/unit/test_*.c)
UNIT_BINS   := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))
BENCH_SRCS  := $(wildcard bench/*.c)
BENCH_BINS  := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRCS))
E2E_PRELOADS := $(patsubst tests/e2e/%.c,$(BUILD)/e2e/%.so,$(wildcard tests/e2e/*.c))
FUZZ_SRCS   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_NAMES  := $(patsubst tests/fuzz/fuzz_%.c,%,$(FUZZ_SRCS))
REPLAY_BINS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz-replay/%,$(FUZZ_SRCS))

.PHONY: all deps bench-deps fuzz-deps run check test unit e2e graph web asan tsan tsan-test \
        bench bench-quick fuzz demo clean format
# Keep objects: they are intermediate files of pattern rules, which make would delete.
.SECONDARY:
.DEFAULT_GOAL := all

all: $(BUILD)/herold $(CLIENT_BINS) $(UNIT_BINS) $(BENCH_BINS) $(REPLAY_BINS) $(E2E_PRELOADS)

# Installs only what is missing: dpkg-query answers in milliseconds when all is there.
deps:
	@$(MAKE) --no-print-directory install-debs PACKAGES="$(DEB_PKGS)"
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	    echo "installing: nodejs npm"; \
	    SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends nodejs npm; \
	fi

bench-deps:
	@$(MAKE) --no-print-directory install-debs PACKAGES="$(BENCH_DEB_PKGS)"

fuzz-deps:
	@$(MAKE) --no-print-directory install-debs PACKAGES="$(FUZZ_DEB_PKGS)"

.PHONY: install-debs
install-debs:
	@missing=""; for p in $(PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(CORE_LIB): $(BROKER_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/herold: $(BUILD)/obj/broker/main.o $(CORE_LIB)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS)

# Clients are standalone programs; they may use the core library's helpers.
$(BUILD)/%: $(BUILD)/obj/clients/%.o $(CORE_LIB)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS)

# Preloaded by the end-to-end tests into a broker that should have a slower disk or a
# stalled service thread; built without sanitizers (the broker's own runtime does the
# checking).
$(BUILD)/e2e/%.so: tests/e2e/%.c
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) -O2 -shared -fPIC -o $@ $< -ldl

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(CHECK_LIBS) $(PKG_LIBS)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS)

# Each fuzz target with the replay driver: its corpus and regression inputs, run once.
$(BUILD)/fuzz-replay/%: $(BUILD)/obj/tests/fuzz/%.o $(BUILD)/obj/tests/fuzz/replay.o $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS)

run: deps all
	@mkdir -p var
	@echo "herold: the live-alert page on http://127.0.0.1:8080/, WebSocket /v1.0/ws, events on tcp://127.0.0.1:5560"
	@echo "herold: get a token with:  $(BUILD)/herold token alice --groups staff --data var"
	@echo "herold: stop with Ctrl-C"
	./$(BUILD)/herold --data var --web clients/web

# herold fed by all three kinds of store (a throwaway PostgreSQL with the example tables and
# herold-pg-source, a watched directory with herold-fs-source), changes every few seconds,
# and the live-alert page; prints the address and two users' tokens. Ctrl-C stops it.
demo: deps all
	/usr/bin/python3 demo/demo.py

# Unit tests (Check), then end-to-end tests (pytest) against the binaries in $(BUILD), then
# the unmodified Microsoft Graph client library against the same broker (Node.js). Unit and
# end-to-end tests each get a throwaway PostgreSQL (tests/with-pg) for the store that lives
# there; it runs as a non-root user in a temporary directory and is removed afterwards.
test: all
	tests/with-pg sh -c 'set -e; for t in $(UNIT_BINS); do echo "== $$t"; CK_DEFAULT_TIMEOUT=60 $$t; done'
	set -e; for f in $(FUZZ_NAMES); do \
	    $(BUILD)/fuzz-replay/fuzz_$$f tests/fuzz/corpus/$$f tests/fuzz/regress/$$f; done
	tests/with-pg env HEROLD_BUILD=$(BUILD) /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e
	$(MAKE) graph
	$(MAKE) web

# The live-alert page in headless Chromium (Debian's chromium, playwright-core from npm),
# against herold, a throwaway PostgreSQL and herold-pg-source.
web: all
	cd tests/web && npm ci --no-audit --no-fund --silent && \
	    ../with-pg env HEROLD_BUILD=$(abspath $(BUILD)) node --test

graph: all
	cd tests/graph && npm ci --no-audit --no-fund --silent && \
	    HEROLD_BUILD=$(abspath $(BUILD)) node --test

unit: all
	tests/with-pg sh -c 'set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done'

e2e: all
	tests/with-pg env HEROLD_BUILD=$(BUILD) /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e

check: deps
	$(MAKE) BUILD=build test
	$(MAKE) BUILD=build/asan test
	$(MAKE) BUILD=build/tsan tsan-test

asan:
	$(MAKE) BUILD=build/asan all

tsan:
	$(MAKE) BUILD=build/tsan all

# The threads under ThreadSanitizer (with BUILD=build/tsan): the unit tests and the
# end-to-end suite. A report fails the test that caused it (the broker then exits 66 at its
# stop; a client's report shows in its stderr). tests/tsan.supp says what is left out, and
# why.
TSAN_ENV = TSAN_OPTIONS="suppressions=$(abspath tests/tsan.supp) second_deadlock_stack=1" \
           HEROLD_TEST_TIME_SCALE=3
tsan-test: all
	tests/with-pg sh -c 'set -e; for t in $(UNIT_BINS); do echo "== $$t"; \
	    $(TSAN_ENV) CK_DEFAULT_TIMEOUT=120 $$t; done'
	$(TSAN_ENV) tests/with-pg env HEROLD_BUILD=$(BUILD) /usr/bin/python3 -m pytest -q \
	    -p no:cacheprovider tests/e2e

# libFuzzer (clang) on every target in tests/fuzz/ for FUZZ_SECONDS each (default 60),
# starting from the committed corpus; new inputs collect in build/fuzz/corpus/, and any
# crash is written to build/fuzz/crashes/ and stops the run. A crash, once fixed, goes
# into tests/fuzz/regress/<target>/, which `make check` replays.
FUZZ_SECONDS ?= 60
FUZZ_CC      := clang
FUZZ_FLAGS   := -std=c11 -D_GNU_SOURCE -g -O1 -Ibroker -fno-omit-frame-pointer \
                -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_OBJS    := $(patsubst %.c,build/fuzz/obj/%.o,$(BROKER_SRCS))

build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link $(PKG_CFLAGS) -c $< -o $@

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_OBJS)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer $(PKG_CFLAGS) -o $@ $^ $(PKG_LIBS)

fuzz: fuzz-deps $(patsubst %,build/fuzz/fuzz_%,$(FUZZ_NAMES))
	@mkdir -p build/fuzz/crashes
	set -e; for f in $(FUZZ_NAMES); do \
	    mkdir -p build/fuzz/corpus/$$f; \
	    echo "== fuzz_$$f for $(FUZZ_SECONDS) s"; \
	    build/fuzz/fuzz_$$f -max_total_time=$(FUZZ_SECONDS) -max_len=16384 -timeout=10 \
	        -rss_limit_mb=2048 -print_final_stats=1 \
	        -artifact_prefix=build/fuzz/crashes/$$f- \
	        build/fuzz/corpus/$$f tests/fuzz/corpus/$$f 2>&1 | \
	        grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::average_exec_per_sec|.*ERROR|SUMMARY)" \
	        || true; \
	    if ls build/fuzz/crashes/$$f-* >/dev/null 2>&1; then \
	        echo "fuzz_$$f: a crash is in build/fuzz/crashes/"; exit 1; fi; \
	done

# herold and the peers (mosquitto, nats-server, Redis) on the same workloads, one after the
# other, three rounds: rewrites the suite section of bench/RESULTS.md and the plots in
# bench/results/. A few minutes. bench-quick: one short round (under a minute), printing
# the W1 ratio only.
bench: deps bench-deps all
	/usr/bin/python3 bench/suite.py --build $(BUILD)

bench-quick: deps bench-deps all
	/usr/bin/python3 bench/suite.py --quick --no-results-md --build $(BUILD)

clean:
	rm -rf build

format:
	clang-format -i broker/*.[ch] clients/*.[ch] tests/unit/*.c tests/fuzz/*.c bench/*.c

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
