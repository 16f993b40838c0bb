# snapshot/: ember's snapshot file format (linked into build/ember by vmm/module.mk). Unit tests
# and the fuzz target of the format and of the state-file reader (snapshot/read.c).
SNAP_READ_SRCS := snapshot/format.c snapshot/read.c snapshot/fileio.c vmm/config.c vmm/log.c
UNIT_DEPS_test_snapshot_format := snapshot/format.c vmm/log.c
UNIT_DEPS_test_snapshot_read   := $(SNAP_READ_SRCS)
FUZZ_DEPS_fuzz_snapshot_read   := $(SNAP_READ_SRCS)
FUZZ_DEPS_fuzz_snapshot_ws     := snapshot/ws.c snapshot/fileio.c vmm/loop.c vmm/log.c snapshot/format.c
