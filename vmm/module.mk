# vmm/: the ember binary.
EMBER_SRCS := $(wildcard vmm/*.c)
EMBER_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(EMBER_SRCS))
EMBER_LIBS := -lpthread
BINARIES   += $(BUILD)/ember

$(BUILD)/ember: $(EMBER_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(EMBER_LIBS)
