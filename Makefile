# infergate build. `make run` and `make test` are the two commands of the README.
BUILD    ?= build
CC       ?= cc
LLHTTP   ?= /usr/share/llhttp
LLHTTP_H ?= /usr/share/include/llhttp
OPT      ?= -O2 -g
SANFLAGS ?=
CFLAGS_IG = -std=gnu11 $(OPT) -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
            -I$(LLHTTP_H) -pthread -D_GNU_SOURCE $(SANFLAGS)
LDLIBS    = -luv -ljansson -lxxhash -lnats -lssl -lcrypto -lm -pthread $(SANFLAGS)

# everything but main() goes into one static library that the gateway, the
# mock worker, the unit tests, the fuzzers and the benchmarks link: each
# source compiles once per build flavour
MAIN_SRC  = src/app/ig_main.c
LIB_SRC   = $(filter-out $(MAIN_SRC),$(sort $(wildcard src/*/*.c)))
MOCK_SRC  = tools/mockworker/mockworker.c tools/mockworker/mock_sessions.c tools/mockworker/mock_kvcache.c tools/mockworker/mock_pd.c
LLHTTP_SRC = $(LLHTTP)/llhttp.c $(LLHTTP)/api.c $(LLHTTP)/http.c
UNIT_TESTS = test_body_scan test_http test_policy test_config test_registry test_admin test_sessions test_affinity test_framing test_freelist test_h1resp test_budget test_admission test_pool test_pick test_breaker test_h1req test_sticky test_prom test_pd_body test_prefix_share test_access_log

LIB_OBJ   = $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
MOCK_OBJ  = $(MOCK_SRC:%.c=$(BUILD)/obj/%.o)
LLHTTP_OBJ = $(BUILD)/obj/llhttp/llhttp.o $(BUILD)/obj/llhttp/api.o $(BUILD)/obj/llhttp/http.o
LIB       = $(BUILD)/libinfergate.a

.PHONY: all setup run test layers unit e2e asan test-asan tsan test-tsan bench clean format fuzz fuzz-replay
all: $(BUILD)/infergate $(BUILD)/infergate-mockworker

$(LIB): $(LIB_OBJ) $(LLHTTP_OBJ)
	@echo "  AR      $@"
	@rm -f $@ && ar rcs $@ $^

$(BUILD)/infergate: $(MAIN_SRC:%.c=$(BUILD)/obj/%.o) $(LIB)
	@echo "  LD      $@"
	@$(CC) -o $@ $^ $(LDLIBS)

$(BUILD)/infergate-mockworker: $(MOCK_OBJ) $(LIB)
	@echo "  LD      $@"
	@$(CC) -o $@ $^ $(LDLIBS)

# header dependencies come from the compiler (-MMD), -MP so a removed header does not break the build
$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_IG) -MMD -MP -c -o $@ $<

# llhttp is generated C that does not pass -Wextra -Werror: its own flags
$(BUILD)/obj/llhttp/%.o: $(LLHTTP)/%.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) -O2 -g -I$(LLHTTP_H) $(SANFLAGS) -c -o $@ $<

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---- the README's two commands ----
setup:
	@scripts/setup.sh

run: setup
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh

test: setup
	@$(MAKE) --no-print-directory layers
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory e2e
	@$(MAKE) --no-print-directory test-asan
	@$(MAKE) --no-print-directory test-tsan

# ---- tests ----
# no include from a lower layer to a higher one (ARCHITECTURE.md); the known
# edges still to remove are in scripts/layer-exceptions.txt
layers:
	@scripts/check-layers.sh

# unit tests link the library (the linker takes only the objects they use)
$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIB)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) -o $@ $^ -lcmocka $(LDLIBS)

unit: $(UNIT_TESTS:%=$(BUILD)/tests/%)
	@set -e; for t in $^; do echo "== $$t"; $$t; done

e2e: all
	IG_BUILD=$(abspath $(BUILD)) /usr/bin/python3 -m pytest -q tests/e2e $(PYTEST_ARGS)

asan:
	@$(MAKE) --no-print-directory BUILD=build/asan OPT="-O1 -g -fno-omit-frame-pointer" \
	  SANFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" all

# the end-to-end suite against the sanitizer build
test-asan: asan
	@$(MAKE) --no-print-directory BUILD=build/asan OPT="-O1 -g -fno-omit-frame-pointer" \
	  SANFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" unit fuzz-replay
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	IG_BUILD=$(abspath build/asan) IG_SANITIZED=1 /usr/bin/python3 -m pytest -q tests/e2e $(PYTEST_ARGS)

TSAN_FLAGS = -fsanitize=thread
tsan:
	@$(MAKE) --no-print-directory BUILD=build/tsan OPT="-O1 -g" SANFLAGS="$(TSAN_FLAGS)" all \
	  build/tsan/tests/registry_stress

$(BUILD)/tests/registry_stress: $(BUILD)/obj/tests/stress/registry_stress.o $(LIB)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) -o $@ $^ $(LDLIBS)

# the registry stress test, then the whole end-to-end suite, under ThreadSanitizer
test-tsan: tsan
	TSAN_OPTIONS=halt_on_error=1 build/tsan/tests/registry_stress
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 IG_BUILD=$(abspath build/tsan) IG_SANITIZED=1 \
	/usr/bin/python3 -m pytest -q tests/e2e $(PYTEST_ARGS)

$(BUILD)/route_bench: $(BUILD)/obj/bench/route_bench.o $(LIB)
	@echo "  LD      $@"
	@$(CC) -o $@ $^ $(LDLIBS)

bench: setup all $(BUILD)/route_bench
	bench/run.sh

# the style of .clang-format, on every C file of ours
format:
	clang-format -i src/*/*.[ch] tools/mockworker/*.[ch] tests/unit/*.[ch] tests/fuzz/*.[ch] tests/stress/*.c bench/*.c

clean:
	rm -rf build

# ---- fuzzing ----
# Each driver in tests/fuzz has a libFuzzer entry point. `make fuzz-replay`
# (part of test-asan) runs the committed corpus through them with gcc and the
# build's sanitizers; `make fuzz` runs libFuzzer itself (clang) for
# FUZZ_SECS per driver, new inputs going to build/fuzz-findings, not the repo.
FUZZERS   = fuzz_request fuzz_client_request fuzz_body_scan fuzz_admin fuzz_response fuzz_prefix_share
FUZZ_SECS ?= 60
FUZZ_SRC  = $(LIB_SRC)
$(BUILD)/fuzz/%-replay: $(BUILD)/obj/tests/fuzz/%.o $(BUILD)/obj/tests/fuzz/replay.o $(LIB)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) -o $@ $^ $(LDLIBS)

fuzz-replay: $(FUZZERS:%=$(BUILD)/fuzz/%-replay)
	@set -e; for f in $(FUZZERS); do echo "== $$f corpus"; \
	  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $(BUILD)/fuzz/$$f-replay tests/fuzz/corpus/$$f; done

fuzz:
	@IG_EXTRA_PKGS="clang libclang-rt-14-dev" scripts/setup.sh
	@mkdir -p build/fuzz-clang build/fuzz-findings
	@set -e; for f in $(FUZZERS); do \
	  echo "== $$f: libFuzzer for $(FUZZ_SECS) s"; \
	  clang -std=gnu11 -g -O1 -I$(LLHTTP_H) -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
	    -o build/fuzz-clang/$$f tests/fuzz/$$f.c $(FUZZ_SRC) $(LLHTTP_SRC) -luv -ljansson -lxxhash -lnats -lssl -lcrypto -lm -pthread; \
	  dict=tests/fuzz/json.dict; [ $$f = fuzz_request ] && dict=tests/fuzz/request.dict; \
	  [ $$f = fuzz_client_request ] && dict=tests/fuzz/request.dict; \
	  [ $$f = fuzz_response ] && dict=tests/fuzz/response.dict; \
	  mkdir -p build/fuzz-findings/$$f; \
	  build/fuzz-clang/$$f -max_total_time=$(FUZZ_SECS) -dict=$$dict -artifact_prefix=build/fuzz-findings/ \
	    build/fuzz-findings/$$f tests/fuzz/corpus/$$f; \
	done
