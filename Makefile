# ember: the one entry point. See README.md.
#
#   make            build build/ember (and the other binaries)
#   make deps       install every Debian package the project needs (idempotent)
#   make guest      guest kernel (vmlinux + bzImage), rootfs.ext4, initramfs.cpio.gz
#   make testhost   the nested KVM test host image (see tests/host/README.md)
#   make test       everything CI runs: lint, unit, integration (KVM tests included)
#   make run        deps + build + guest, then boot the default VM on this terminal
#   make smoke      the same without a terminal: run `uname -a` etc. in the guest, print it
#   make lint       clang-format (check mode) and cppcheck
#   make bench      boot time, memory, block and network I/O, snapshot restore: ember beside
#                   QEMU microvm (ratios); tables as text, JSON and PNG plots in build/bench/
#   make fuzz       run every libFuzzer target for FUZZ_SECONDS (make test runs them briefly)
#   make install    install the binaries into $(PREFIX)/bin (default /usr/local)
#   make clean      remove build/ (the kernel cache outside the tree is kept)
#
# Each directory adds itself through a module.mk fragment (see "Modules" below).

BUILD      := build
CC         ?= gcc
PYTHON     := /usr/bin/python3
EMBER_CACHE ?= /var/cache/ember
export EMBER_CACHE

CFLAGS_WARN := -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wpointer-arith \
	-Wmissing-prototypes -Wstrict-prototypes -Wundef
CFLAGS_HARDEN := -fstack-protector-strong -D_FORTIFY_SOURCE=2 -fPIE
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 $(CFLAGS_WARN) $(CFLAGS_HARDEN) -MMD -MP
LDFLAGS += -pie -Wl,-z,relro,-z,now

# ---- Modules --------------------------------------------------------------
# A module.mk may append to:
#   BINARIES      final programs built by `make` (e.g. build/ember)
#   TEST_PROGRAMS helper programs the tests need (probes), built before tests
#   LINT_SRCS     C sources and headers checked by `make lint` (default: all tracked *.c/*.h)
# A unit test is tests/unit/test_NAME.c; the module that owns the code under test sets
#   UNIT_DEPS_test_NAME := dir/file.c ...   (sources linked into the test)
#   UNIT_LIBS_test_NAME := -lfoo            (extra libraries)
BINARIES      :=
TEST_PROGRAMS :=
include $(sort $(wildcard */module.mk tests/*/module.mk))

.DEFAULT_GOAL := all
.PHONY: all deps guest testhost test unit integration lint run smoke clean format install \
	fuzz fuzz-short bench bench-boot bench-blk bench-restore bench-net bench-vsock

all: $(BINARIES)

# Keep intermediate objects (unit-test objects are otherwise deleted after linking).
.SECONDARY:

# Generic object rule: build/obj/<path>.o from <path>.c
$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# ---- Unit tests (cmocka) ----------------------------------------------------
UNIT_TEST_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_TESTS     := $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%,$(UNIT_TEST_SRCS))
.SECONDEXPANSION:
# Objects of a unit test's UNIT_DEPS. A function, because in the rule line make would
# substitute the stem into a patsubst's % and read a ':' as a second target pattern.
unit_dep_objs = $(addprefix $(BUILD)/obj/,$(patsubst %.c,%.o,$(UNIT_DEPS_$(1))))
$(BUILD)/tests/unit/%: $(BUILD)/obj/tests/unit/%.o $$(call unit_dep_objs,$$*)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(UNIT_LIBS_$*) -lcmocka

unit: $(UNIT_TESTS)
	@set -e; fails=0; for t in $(UNIT_TESTS); do \
		echo "== $$t"; $$t || fails=$$((fails+1)); done; \
	if [ $$fails -ne 0 ]; then echo "unit: $$fails test program(s) failed"; exit 1; fi

# ---- Fuzzing (libFuzzer: clang, ASan + UBSan) ----------------------------------
# A fuzz target is tests/fuzz/fuzz_NAME.c defining LLVMFuzzerTestOneInput; the module that
# owns the code under test sets FUZZ_DEPS_fuzz_NAME := dir/file.c ... (compiled in with
# the sanitizers) and optionally FUZZ_LIBS_fuzz_NAME. Seeds: tests/fuzz/corpus/NAME/.
# `make test` runs each target FUZZ_SHORT seconds; `make fuzz` runs FUZZ_SECONDS each.
FUZZ_CC      := clang
FUZZ_CFLAGS  := -std=gnu11 -g -O1 -Wall -Wextra -Werror \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_SRCS    := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRCS))
FUZZ_SHORT   ?= 20
FUZZ_SECONDS ?= 600
fuzz_dep_srcs = $(FUZZ_DEPS_$(1))
$(BUILD)/fuzz/%: tests/fuzz/%.c $$(call fuzz_dep_srcs,$$*)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $^ $(FUZZ_LIBS_$*)

# run_fuzz(seconds): each target in turn; the corpus grows in build/fuzz-corpus/NAME,
# a crash leaves its input in build/fuzz-artifacts/ and fails the run with the full log.
define run_fuzz
	@set -e; mkdir -p $(BUILD)/fuzz-artifacts; for t in $(FUZZ_TARGETS); do \
		n=$${t##*/fuzz_}; corpus=$(BUILD)/fuzz-corpus/$$n; mkdir -p $$corpus; \
		seeds=tests/fuzz/corpus/$$n; [ -d $$seeds ] || seeds=; \
		echo "== $$t for $(1) s"; \
		if ! $$t -max_total_time=$(1) -artifact_prefix=$(BUILD)/fuzz-artifacts/$$n- \
			$$corpus $$seeds >$(BUILD)/fuzz-$$n.log 2>&1; then \
			cat $(BUILD)/fuzz-$$n.log; echo "fuzz: $$n failed"; exit 1; fi; \
		grep -E '^#[0-9]+.*DONE' $(BUILD)/fuzz-$$n.log || tail -n 1 $(BUILD)/fuzz-$$n.log; \
	done
endef

fuzz-short: $(FUZZ_TARGETS)
	$(call run_fuzz,$(FUZZ_SHORT))

fuzz: $(FUZZ_TARGETS)
	$(call run_fuzz,$(FUZZ_SECONDS))

# ---- Set-up -----------------------------------------------------------------
deps:
	@tools/install-deps

guest:
	@rootfs-tools/build-guest

testhost:
	@tests/host/build-image

# ---- Lint -------------------------------------------------------------------
LINT_SRCS ?= $(shell git ls-files '*.c' '*.h' 2>/dev/null)
lint:
	@echo "== clang-format --dry-run"
	@clang-format --dry-run --Werror $(LINT_SRCS)
	@echo "== cppcheck"
	@cppcheck --quiet --error-exitcode=1 --enable=warning,portability,performance \
		--inline-suppr --std=c11 -D__x86_64__ -D__linux__ $(LINT_SRCS)
	@echo "lint: ok"

format:
	clang-format -i $(LINT_SRCS)

# ---- Tests ------------------------------------------------------------------
# Integration tests: pytest on this machine for what needs no hardware-style KVM,
# then the `kvm`-marked tests where a Linux guest can boot: directly when /dev/kvm is
# hardware-backed, otherwise inside the nested test host (tests/host/run --auto).
PYTEST := $(PYTHON) -m pytest -ra
integration: all $(TEST_PROGRAMS) guest testhost
	@echo "== pytest (this machine)"
	$(PYTEST) -m "not kvm" tests/integration
	@echo "== pytest (KVM tests: $$(tests/host/run --where))"
	@# No test is rerun: a KVM test that fails, fails. A test host that dies (125: its kernel
	@# panicked, stalled or wedged, tests/host/README.md) is no test's result: the suite goes on in
	@# a new test host with the tests that had not finished, and says which test each death hit.
	tests/host/kvm-suite

test: deps
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory all $(TEST_PROGRAMS)
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory fuzz-short
	@$(MAKE) --no-print-directory integration

# ---- Benchmarks (never part of `make test`) -----------------------------------
# ember beside QEMU microvm on the same kernel and rootfs, in the same run, where Linux can
# boot under KVM (the test host on our PVM machines): compare the ratios, not the times.
# Each writes build/bench/NAME.{txt,json} and PNG plots (tests/bench/report.py, gnuplot).
bench: bench-boot bench-blk bench-restore bench-net bench-vsock

bench-boot: all $(TEST_PROGRAMS) guest testhost
	tests/host/run --auto --timeout 3000 -- tests/guest/measure-boot --runs 5

# BENCH_BLK_ARGS: e.g. "--repeat 5 --baseline /path/to/older/ember" (tests/bench/blk-vs-qemu).
bench-blk: all $(TEST_PROGRAMS) guest testhost
	@tests/host/run --auto --timeout 5400 -- tests/bench/blk-vs-qemu $(BENCH_BLK_ARGS); rc=$$?; \
	[ $$rc = 125 ] || exit $$rc; echo "== the test host died (125): once more"; \
	tests/host/run --auto --timeout 5400 -- tests/bench/blk-vs-qemu $(BENCH_BLK_ARGS)

# Snapshot restore (issue 13): the VMM-only figures with the probe guest on this machine's
# /dev/kvm (PVM runs it), then the Linux guest beside QEMU microvm's migration restore where
# Linux boots under KVM; between them the memory backends with a cold and a warm page cache and
# Diff against Full (issue 14, restore-lazy, probe guest, needs root for drop_caches).
# BENCH_RESTORE_ARGS / BENCH_RESTORE_PROBE_ARGS / BENCH_RESTORE_LAZY_ARGS: e.g. "--runs 9".
bench-restore: all $(TEST_PROGRAMS) guest testhost
	tests/bench/restore-probe $(BENCH_RESTORE_PROBE_ARGS)
	tests/bench/restore-lazy $(BENCH_RESTORE_LAZY_ARGS)
	tests/host/run --auto --timeout 3000 -- tests/bench/restore-vs-qemu $(BENCH_RESTORE_ARGS)

# BENCH_NET_ARGS: e.g. "--repeat 5 --seconds 10 --baseline /path/to/older/ember"
# (tests/bench/net-vs-qemu).
bench-net: all guest testhost $(BENCH_GUEST)
	@tests/host/run --auto --timeout 5400 -- tests/bench/net-vs-qemu $(BENCH_NET_ARGS); rc=$$?; \
	[ $$rc = 125 ] || exit $$rc; echo "== the test host died (125): once more"; \
	tests/host/run --auto --timeout 5400 -- tests/bench/net-vs-qemu $(BENCH_NET_ARGS)

# virtio-vsock beside QEMU's vhost-vsock-device, then snapshot load → the guest agent's answer.
# BENCH_VSOCK_ARGS: e.g. "--repeat 5 --loads 5 --seconds 5" (tests/bench/vsock-vs-qemu).
bench-vsock: all $(TEST_PROGRAMS) guest testhost
	@tests/host/run --auto --timeout 5400 -- tests/bench/vsock-vs-qemu $(BENCH_VSOCK_ARGS); rc=$$?; \
	[ $$rc = 125 ] || exit $$rc; echo "== the test host died (125): once more"; \
	tests/host/run --auto --timeout 5400 -- tests/bench/vsock-vs-qemu $(BENCH_VSOCK_ARGS)

# ---- Running a VM -----------------------------------------------------------
run: deps
	@$(MAKE) --no-print-directory all guest testhost
	@tools/run-default-vm

# Boot the default guest without a terminal, run a command in it, print what it said.
smoke: deps
	@$(MAKE) --no-print-directory all guest testhost
	@tools/smoke

PREFIX  ?= /usr/local
DESTDIR ?=
# Stripped: ember-jailer copies ember into every jail (1.2 MB instead of 1.8 MB).
install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -s -m 0755 $(BINARIES) $(DESTDIR)$(PREFIX)/bin/

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
