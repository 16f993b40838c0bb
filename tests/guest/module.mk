# tests/guest/: tiny probe guests for ember's tests (no libc, entered like a vmlinux).
PROBE_GUEST := $(BUILD)/tests/guest/probe
TEST_PROGRAMS += $(PROBE_GUEST)

$(PROBE_GUEST): tests/guest/probe.S tests/guest/module.mk
	@mkdir -p $(dir $@)
	$(CC) -nostdlib -static -no-pie -Wl,--build-id=none -Wl,-Ttext=0x200000 \
		-Wl,-z,noexecstack -o $@ $<
