# rootfs-tools/: the guest's init (static), used by rootfs-tools/build-guest.
GUEST_INIT := $(BUILD)/guest-init/init
TEST_PROGRAMS += $(GUEST_INIT)

# Static: the guest rootfs has busybox-static and no libc.
$(GUEST_INIT): rootfs-tools/init/init.c rootfs-tools/init/cmdline.c rootfs-tools/init/cmdline.h
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -Os $(CFLAGS_WARN) -static -o $@ rootfs-tools/init/init.c rootfs-tools/init/cmdline.c

UNIT_DEPS_test_init_cmdline := rootfs-tools/init/cmdline.c
FUZZ_DEPS_fuzz_init_cmdline := rootfs-tools/init/cmdline.c
