# agentd build. Plain GNU make: `make` builds build/agentd (optimised), `make test` installs what
# is missing, builds everything again under ASan+UBSan and runs every test, `make run` starts the
# server on the embedded defaults. See README.md.

CC       ?= cc
# Quiet by default; `make V=1` shows full command lines.
Q := $(if $(V),,@)
PKGS     := libuv libcurl jansson sqlite3 libpq lua5.4 yaml-0.1
DEP_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
DEP_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhttp_parser -lpthread -lm

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wno-unused-parameter -Wpointer-arith -Wformat=2
BASEFLAGS := -std=c11 -D_GNU_SOURCE -Isrc $(WARN) $(DEP_CFLAGS)

# Release build (default) and sanitizer build (tests).
REL_DIR  := build
SAN_DIR  := build/asan
REL_CFLAGS := $(BASEFLAGS) -O2 -g
SAN_CFLAGS := $(BASEFLAGS) -O1 -g -fno-omit-frame-pointer \
              -fsanitize=address,undefined -fno-sanitize-recover=all
SAN_LDFLAGS := -fsanitize=address,undefined

# The SQL migrations are compiled in: build/gen/migrations.c is generated from src/store/migrations/.
GEN_MIGRATIONS := build/gen/migrations.c
MIGRATION_SQL  := $(sort $(wildcard src/store/migrations/*/*.sql))
LIB_SRCS  := $(filter-out src/app/main.c,$(wildcard src/*/*.c)) $(GEN_MIGRATIONS)
MAIN_SRC  := src/app/main.c
TEST_SRCS := $(wildcard tests/unit/test_*.c)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)

REL_OBJS := $(LIB_SRCS:%.c=$(REL_DIR)/obj/%.o)
SAN_OBJS := $(LIB_SRCS:%.c=$(SAN_DIR)/obj/%.o)
SAN_TESTS := $(TEST_SRCS:tests/unit/%.c=$(SAN_DIR)/tests/%)

.PHONY: all run test deps unit e2e fuzz fuzz-build asan clean format format-check bench bench-quick

all: $(REL_DIR)/agentd

$(GEN_MIGRATIONS): $(MIGRATION_SQL) scripts/embed-migrations.sh
	@echo "  GEN     $@"
	$(Q)scripts/embed-migrations.sh $@

$(REL_DIR)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(REL_CFLAGS) -MMD -MP -c $< -o $@

$(SAN_DIR)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $< (asan)"
	$(Q)$(CC) $(SAN_CFLAGS) -MMD -MP -c $< -o $@

$(REL_DIR)/libagentd.a: $(REL_OBJS)
	@rm -f $@; ar rcs $@ $^

$(SAN_DIR)/libagentd.a: $(SAN_OBJS)
	@rm -f $@; ar rcs $@ $^

$(REL_DIR)/agentd: $(REL_DIR)/obj/src/app/main.o $(REL_DIR)/libagentd.a
	@echo "  LINK    $@"
	$(Q)$(CC) -o $@ $^ $(DEP_LIBS)

$(SAN_DIR)/agentd: $(SAN_DIR)/obj/src/app/main.o $(SAN_DIR)/libagentd.a
	@echo "  LINK    $@"
	$(Q)$(CC) $(SAN_LDFLAGS) -o $@ $^ $(DEP_LIBS)

$(SAN_DIR)/tests/%: tests/unit/%.c $(SAN_DIR)/libagentd.a
	@mkdir -p $(dir $@)
	@echo "  TEST    $@"
	$(Q)$(CC) $(SAN_CFLAGS) -Itests/unit -o $@ $< $(SAN_DIR)/libagentd.a $(SAN_LDFLAGS) $(DEP_LIBS) -lcmocka

asan: $(SAN_DIR)/agentd $(SAN_TESTS)

deps:
	@scripts/install-deps.sh

run: deps all
	@mkdir -p var
	$(REL_DIR)/agentd serve

# The whole suite: unit tests (cmocka, sanitizers), fuzz smoke runs, end-to-end tests with the
# official openai client against a running sanitizer build and a fake upstream. The unit and
# end-to-end tests run against a throw-away PostgreSQL cluster too (scripts/with-pg.sh); without
# one (`make unit` on its own) the PostgreSQL cases are reported as skipped.
test: deps
	$(MAKE) asan
	$(MAKE) fuzz
	scripts/with-pg.sh $(MAKE) unit e2e

# The MCP client's tests talk to the reference server from npm (tests/mcp, pinned).
unit: $(SAN_TESTS)
	@scripts/npm-ci.sh tests/mcp
	@scripts/run-unit.sh $(SAN_TESTS)

e2e: $(SAN_DIR)/agentd
	@scripts/npm-ci.sh tests/mcp
	@scripts/run-e2e.sh $(SAN_DIR)/agentd

# libFuzzer targets need clang; each runs briefly as a smoke test over its seed corpus. The
# library is compiled once with coverage instrumentation (fuzzer-no-link) and every target links it.
FUZZ_SAN    := -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -Isrc $(WARN) -g -O1 $(DEP_CFLAGS) $(FUZZ_SAN)
FUZZ_OBJS := $(LIB_SRCS:%.c=build/fuzz/obj/%.o)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=build/fuzz/%)
build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $< (fuzz)"
	$(Q)clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@
build/fuzz/libagentd.a: $(FUZZ_OBJS)
	@rm -f $@; ar rcs $@ $^
build/fuzz/%: tests/fuzz/%.c build/fuzz/libagentd.a
	@mkdir -p $(dir $@)
	@echo "  FUZZ    $@"
	$(Q)clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< build/fuzz/libagentd.a $(DEP_LIBS)

fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-build
	@scripts/run-fuzz.sh $(FUZZ_BINS)

build/bench/%: bench/%.c $(REL_DIR)/libagentd.a
	@mkdir -p $(dir $@)
	@echo "  BENCH   $@"
	$(Q)$(CC) $(REL_CFLAGS) -o $@ $< $(REL_DIR)/libagentd.a $(DEP_LIBS)

# The benchmark suite (docs/performance.md, ../shared/BENCH.md): `make bench` (every workload,
# 3 repeats, some minutes), `make bench-quick` (the same smaller, under two minutes). Not a test:
# no timing is asserted anywhere.
BENCH_BINS := build/bench/fake_llm build/bench/loadgen build/bench/store_commits build/bench/search
bench: deps all $(BENCH_BINS)
	@node bench/run.mjs

bench-quick: deps all $(BENCH_BINS)
	@node bench/run.mjs --quick

format:
	clang-format -i $(wildcard src/*/*.c src/*/*.h tests/unit/*.c tests/unit/*.h tests/fuzz/*.c)

format-check:
	clang-format --dry-run -Werror $(wildcard src/*/*.c src/*/*.h tests/unit/*.c tests/unit/*.h tests/fuzz/*.c)

clean:
	rm -rf build

-include $(REL_OBJS:.o=.d) $(SAN_OBJS:.o=.d) $(FUZZ_OBJS:.o=.d) $(REL_DIR)/obj/src/app/main.d $(SAN_DIR)/obj/src/app/main.d
