# jailer/: the ember-jailer binary (never links vmm/ code) and its test probe.
JAILER_SRCS := $(wildcard jailer/*.c)
JAILER_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(JAILER_SRCS))
BINARIES    += $(BUILD)/ember-jailer

$(BUILD)/ember-jailer: $(JAILER_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ -lcap-ng

# The probe runs inside an empty jail, so it is static (no loader, no libc there).
TEST_PROGRAMS += $(BUILD)/tests/jail-probe
$(BUILD)/tests/jail-probe: $(BUILD)/obj/jailer/probe/jail-probe.o
	@mkdir -p $(dir $@)
	$(CC) -static -o $@ $^

UNIT_DEPS_test_jailer_args := jailer/args.c
UNIT_DEPS_test_jailer_elf  := jailer/elf.c jailer/env.c
