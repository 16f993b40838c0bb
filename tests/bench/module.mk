# tests/bench/: restore-floor, the in-run floor of make bench-restore (restore-floor.c); uffd-serve.
RESTORE_FLOOR := $(BUILD)/tests/bench/restore-floor
TEST_PROGRAMS += $(RESTORE_FLOOR)

$(RESTORE_FLOOR): $(BUILD)/obj/tests/bench/restore-floor.o
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^

# uffd-serve: the plain on-demand page-fault handler of tests/bench/restore-lazy.
UFFD_SERVE := $(BUILD)/tests/bench/uffd-serve
TEST_PROGRAMS += $(UFFD_SERVE)

$(UFFD_SERVE): $(BUILD)/obj/tests/bench/uffd-serve.o
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -ljansson
