# tests/bench/: restore-floor, the in-run floor of make bench-restore (restore-floor.c).
RESTORE_FLOOR := $(BUILD)/tests/bench/restore-floor
TEST_PROGRAMS += $(RESTORE_FLOOR)

$(RESTORE_FLOOR): $(BUILD)/obj/tests/bench/restore-floor.o
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^
