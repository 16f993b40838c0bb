# seccomp/: the per-thread filters. ember-seccomp compiles the allow-lists (lists.c) with
# libseccomp; the build embeds its output (build/gen/sc_builtin.c) in ember, which itself only
# reads filter files (filefmt.c), installs them (install.c) and runs the opener (opener.c).
SECCOMP_TOOL       := $(BUILD)/ember-seccomp
SECCOMP_TOOL_SRCS  := seccomp/tool.c seccomp/lists.c seccomp/listio.c seccomp/compile.c \
	seccomp/filefmt.c
SECCOMP_EMBER_SRCS := seccomp/install.c seccomp/opener.c seccomp/sandbox.c seccomp/filefmt.c
SECCOMP_GEN        := $(BUILD)/gen/sc_builtin.c
BINARIES           += $(SECCOMP_TOOL)

$(SECCOMP_TOOL): $(patsubst %.c,$(BUILD)/obj/%.o,$(SECCOMP_TOOL_SRCS))
	$(CC) $(LDFLAGS) -o $@ $^ -lseccomp -ljansson

$(SECCOMP_GEN): $(SECCOMP_TOOL)
	@mkdir -p $(dir $@)
	$(SECCOMP_TOOL) compile --c-source -o $@

$(BUILD)/obj/gen/sc_builtin.o: $(SECCOMP_GEN)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iseccomp -c $< -o $@

# ember: the runtime half, the embedded filters, and every pthread_create through
# install.c's wrapper (libmicrohttpd's thread installs the api filter before it runs).
$(BUILD)/ember: $(patsubst %.c,$(BUILD)/obj/%.o,$(SECCOMP_EMBER_SRCS)) $(BUILD)/obj/gen/sc_builtin.o
$(BUILD)/ember: LDFLAGS += -Wl,--wrap=pthread_create

# SECURITY.md's allow-lists section is ember-seccomp's output (tests check it matches).
.PHONY: seccomp-doc
seccomp-doc: $(SECCOMP_TOOL)
	@$(PYTHON) tools/seccomp-doc $(SECCOMP_TOOL) SECURITY.md

UNIT_DEPS_test_seccomp_file := seccomp/filefmt.c
FUZZ_DEPS_fuzz_seccomp_file := seccomp/filefmt.c
