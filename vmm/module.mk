# vmm/: the ember binary.
EMBER_SRCS := $(wildcard vmm/*.c) $(wildcard virtio/*.c) $(wildcard snapshot/*.c)
EMBER_SRCS += $(wildcard api-socket/*.c)
EMBER_SRCS += rootfs-tools/agent/proto.c # `ember exec` speaks the guest agent's protocol
EMBER_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(EMBER_SRCS))
# ember is one static PIE: ember-jailer runs it in an empty chroot (no loader, no libraries
# to bind-mount), and a process start skips the dynamic loader (~0.5 ms of CPU). libmicrohttpd's
# TLS is bound to api-socket/notls.c, so no TLS stack comes in; ember does no NSS lookups.
EMBER_LIBS := -luring -lmicrohttpd -ljansson -lpthread
BINARIES   += $(BUILD)/ember

$(BUILD)/ember: $(EMBER_OBJS)
	$(CC) $(filter-out -pie,$(LDFLAGS)) -static-pie -o $@ $^ $(EMBER_LIBS)

# Unit tests (tests/unit/test_*.c) and the vmm sources each links.
UNIT_DEPS_test_memory     := vmm/memory.c
UNIT_DEPS_test_boot       := vmm/boot_x86_64.c vmm/mptable_x86_64.c vmm/memory.c
UNIT_DEPS_test_vmm_loader := vmm/loader_x86_64.c vmm/memory.c vmm/log.c
UNIT_DEPS_test_vmm_loop   := vmm/loop.c
UNIT_DEPS_test_vmm_cli    := vmm/cli.c vmm/config.c vmm/drive.c vmm/log.c
UNIT_DEPS_test_vmm_cpuid  := vmm/cpuid_x86_64.c
UNIT_DEPS_test_vmm_devices := vmm/serial.c vmm/i8042.c vmm/bus.c vmm/boot_timer.c vmm/log.c \
	virtio/tbucket.c
UNIT_LIBS_test_vmm_devices := -lpthread
UNIT_DEPS_test_vmm_serial := $(UNIT_DEPS_test_vmm_devices)
UNIT_LIBS_test_vmm_serial := -lpthread

# Fuzz targets (tests/fuzz/fuzz_*.c) and the vmm sources each is built with.
FUZZ_DEPS_fuzz_vmm_loader := vmm/loader_x86_64.c vmm/boot_x86_64.c vmm/mptable_x86_64.c \
	vmm/memory.c vmm/log.c
