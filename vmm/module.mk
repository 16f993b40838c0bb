# vmm/: the ember binary.
EMBER_SRCS := $(wildcard vmm/*.c) $(wildcard virtio/*.c)
EMBER_SRCS += $(wildcard api-socket/*.c)
EMBER_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(EMBER_SRCS))
EMBER_LIBS := -lpthread -luring
# libmicrohttpd statically, its TLS bound to api-socket/notls.c: no GnuTLS chain to
# load (~2 ms of CPU per process start) and no TLS stack in the VMM.
EMBER_LIBS += -Wl,-Bstatic -lmicrohttpd -Wl,-Bdynamic -ljansson
BINARIES   += $(BUILD)/ember

$(BUILD)/ember: $(EMBER_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(EMBER_LIBS)

# Unit tests (tests/unit/test_*.c) and the vmm sources each links.
UNIT_DEPS_test_memory     := vmm/memory.c
UNIT_DEPS_test_boot       := vmm/boot_x86_64.c vmm/mptable_x86_64.c vmm/memory.c
UNIT_DEPS_test_vmm_loader := vmm/loader_x86_64.c vmm/memory.c vmm/log.c
UNIT_DEPS_test_vmm_cli    := vmm/cli.c vmm/log.c virtio/drive.c
UNIT_DEPS_test_vmm_cpuid  := vmm/cpuid_x86_64.c
UNIT_DEPS_test_vmm_devices := vmm/serial.c vmm/i8042.c vmm/bus.c vmm/boot_timer.c vmm/log.c
UNIT_LIBS_test_vmm_devices := -lpthread
