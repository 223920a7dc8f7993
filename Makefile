# appfront — the one build entry. See README.md and docs/building.md.
#
#   make            build build/appfront, build/libappfront.a, examples
#   make run        run appfront on examples/hello
#   make test       unit tests (cmocka), end-to-end tests (pytest), Go tests
#   make test SANITIZE=1   the same, everything built with ASan + UBSan
#   make bench      benchmarks (see bench/)
#   make fuzz       libFuzzer targets for FUZZ_SECONDS each (tests/fuzz/)
#   make install    install build/appfront into $(PREFIX)/bin

PREFIX  ?= /usr/local
CC      ?= cc
PKGS    := libevent libevent_pthreads libprotobuf-c yaml-0.1 sqlite3 libpcre2-8 libevent_openssl openssl zlib
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS)) -lhttp_parser

ifeq ($(SANITIZE),1)
BUILD   ?= build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD   ?= build
SANFLAGS :=
endif

OPT     ?= -O2 -g
WARN    := -Wall -Wextra -Wshadow -Wno-unused-parameter -Wstrict-prototypes -Wmissing-prototypes
ifeq ($(CI),true)
WARN    += -Werror
endif
ifeq ($(WERROR),1)
WARN    += -Werror
endif
CFLAGS  += -std=gnu11 $(OPT) $(WARN) $(SANFLAGS) -D_GNU_SOURCE -MMD -MP \
	   -I. -I$(BUILD)/proto $(PKG_CFLAGS)
LDFLAGS += $(SANFLAGS)
LDLIBS  += $(PKG_LIBS) -lpthread -lm

# Sources, by part. Every .c in these folders is built; no list to keep.
PROTO_SRC  := $(wildcard proto/*.proto)
PROTO_C    := $(patsubst proto/%.proto,$(BUILD)/proto/%.pb-c.c,$(PROTO_SRC))
PROTO_H    := $(PROTO_C:.c=.h)
PROTO_OBJ  := $(PROTO_C:.c=.o)
COMMON_SRC := $(wildcard common/*.c)
PROXY_SRC  := $(filter-out proxy/main.c,$(wildcard proxy/*.c))
API_SRC    := $(wildcard apiserver/*.c apiserver/services/*.c)
CLIENT_SRC := $(wildcard apiserver/client/*.c)
CORE_OBJ   := $(patsubst %.c,$(BUILD)/obj/%.o,$(COMMON_SRC) $(PROXY_SRC) $(API_SRC)) $(PROTO_OBJ)
CLIENT_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(CLIENT_SRC))
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
EXAMPLES   := $(patsubst examples/%/,$(BUILD)/examples/%,$(dir $(wildcard examples/*/main.c)))

.PHONY: all run test unit e2e gotest bench install clean fuzz
# Generated protobuf code is kept even when make built it only as a step.
.SECONDARY: $(PROTO_H) $(PROTO_C)
all: $(BUILD)/appfront $(BUILD)/libappfront.a $(EXAMPLES)

# Generated protobuf-c code lives only in $(BUILD)/proto, never in git.
$(BUILD)/proto/%.pb-c.c $(BUILD)/proto/%.pb-c.h: proto/%.proto
	@mkdir -p $(@D)
	protoc-c --proto_path=proto --c_out=$(BUILD)/proto $<

$(BUILD)/proto/%.pb-c.o: $(BUILD)/proto/%.pb-c.c
	$(CC) $(CFLAGS) -Wno-unused-parameter -c -o $@ $<

# Every object waits for every generated header (order-only).
$(BUILD)/obj/%.o: %.c | $(PROTO_H)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libcore.a: $(CORE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/appfront: $(BUILD)/obj/proxy/main.o $(BUILD)/libcore.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The C client library for native apps: client code plus the protocol.
$(BUILD)/libappfront.a: $(CLIENT_OBJ) $(PROTO_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/examples/%: examples/%/main.c $(wildcard examples/*/*.c) $(BUILD)/libappfront.a | $(PROTO_H)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $(filter %.c,$(wildcard examples/$*/*.c)) $(BUILD)/libappfront.a $(LDFLAGS) $(LDLIBS)

# Unit tests link the core as an archive, so a test may #include the .c it
# tests (to reach its static functions) without duplicate symbols.
$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libcore.a $(BUILD)/libappfront.a | $(PROTO_H)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libcore.a $(BUILD)/libappfront.a $(LDFLAGS) $(LDLIBS) -lcmocka

run: all
	$(BUILD)/appfront --port=8080 --admin_port=8000 examples/hello

PYTEST ?= /usr/bin/python3 -m pytest
unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

e2e: all
	APPFRONT_BUILD=$(abspath $(BUILD)) $(PYTEST) -q tests/e2e

gotest: all
	APPFRONT_BUILD=$(abspath $(BUILD)) tests/go/run.sh

test: all $(UNIT_BIN)
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory gotest
	$(MAKE) --no-print-directory e2e

bench: all
	bench/run.sh

# libFuzzer targets (clang, ASan + UBSan): each for FUZZ_SECONDS, then the
# committed seeds and reproducers once (docs/reliability.md).
FUZZ_SECONDS ?= 60
fuzz:
	tests/fuzz/run.sh all $(FUZZ_SECONDS)
	tests/fuzz/run.sh regress

install: $(BUILD)/appfront
	install -D -m 0755 $(BUILD)/appfront $(DESTDIR)$(PREFIX)/bin/appfront

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj $(BUILD)/tests -name '*.d' 2>/dev/null)
