# rootfs-tools/: the guest's init (static), used by rootfs-tools/build-guest.
GUEST_INIT := $(BUILD)/guest-init/init
TEST_PROGRAMS += $(GUEST_INIT)

# Static: the guest rootfs has busybox-static and no libc.
$(GUEST_INIT): rootfs-tools/init/init.c rootfs-tools/init/cmdline.c rootfs-tools/init/cmdline.h
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -Os $(CFLAGS_WARN) -static -o $@ rootfs-tools/init/init.c rootfs-tools/init/cmdline.c

UNIT_DEPS_test_init_cmdline := rootfs-tools/init/cmdline.c
FUZZ_DEPS_fuzz_init_cmdline := rootfs-tools/init/cmdline.c

# The bench guest (make bench-net): the default tree plus iperf3 from Debian with its shared
# libraries, in build/guest/bench/ (initramfs.cpio.gz, rootfs.ext4); the default rootfs stays
# busybox and init only.
# netrr (tests/guest/netrr.c, static): the TCP/UDP request/response server in the guest
# (/usr/bin/netrr) and the client on the host.
NETRR := $(BUILD)/tests/guest/netrr
TEST_PROGRAMS += $(NETRR)
$(NETRR): tests/guest/netrr.c rootfs-tools/module.mk
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -fPIE -MMD -MP,$(CFLAGS)) -static -o $@ $<
BENCH_GUEST := $(BUILD)/guest/bench/initramfs.cpio.gz
$(BENCH_GUEST): $(GUEST_INIT) rootfs-tools/build-rootfs /usr/bin/iperf3 $(NETRR)
	ROOTFS_EXTRA="/usr/bin/iperf3 $(NETRR)=/usr/bin/netrr" rootfs-tools/build-rootfs \
		$(GUEST_INIT) $(@D)

# The guest agent (static, /sbin/ember-agent in the rootfs) and its protocol, which `ember exec`
# links too (vmm/module.mk).
GUEST_AGENT := $(BUILD)/guest-agent/ember-agent
TEST_PROGRAMS += $(GUEST_AGENT)
$(GUEST_AGENT): rootfs-tools/agent/agent.c rootfs-tools/agent/proto.c rootfs-tools/agent/proto.h
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -Os $(CFLAGS_WARN) -static -o $@ rootfs-tools/agent/agent.c rootfs-tools/agent/proto.c

UNIT_DEPS_test_agent_proto := rootfs-tools/agent/proto.c
FUZZ_DEPS_fuzz_agent_proto := rootfs-tools/agent/proto.c
