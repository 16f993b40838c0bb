# virtio/: the virtqueue, the virtio-mmio transport and the devices (linked into build/ember
# through vmm/module.mk). Unit tests and fuzz targets of this directory:
# virtio-blk's files, the device and its engines.
VBLK_SRCS := virtio/blk.c virtio/blk_io.c virtio/blk_hold.c virtio/blk_update.c virtio/blk_req.c \
	virtio/blk_uring.c virtio/blk_sync.c
UNIT_DEPS_test_virtio_queue := virtio/queue.c vmm/memory.c vmm/log.c
FUZZ_DEPS_fuzz_virtio_queue := virtio/queue.c virtio/blk_req.c vmm/memory.c vmm/log.c
FUZZ_DEPS_fuzz_virtio_mmio  := virtio/mmio.c virtio/mmio_state.c virtio/mmio_regs.c virtio/queue.c $(VBLK_SRCS) \
	virtio/tbucket.c virtio/irqmod.c vmm/memory.c vmm/log.c
FUZZ_LIBS_fuzz_virtio_mmio  := -luring
UNIT_DEPS_test_virtio_mmio  := virtio/mmio.c virtio/mmio_state.c virtio/mmio_regs.c virtio/queue.c vmm/memory.c vmm/log.c
UNIT_LIBS_test_virtio_mmio  := -lpthread
# The device against the transport (tests/unit/blk_harness.c: fake RAM, a driver, temp files);
# _update also through the registry.
BLK_TEST_DEPS := tests/unit/blk_harness.c $(VBLK_SRCS) virtio/tbucket.c virtio/irqmod.c \
	virtio/mmio.c virtio/mmio_state.c virtio/mmio_regs.c virtio/queue.c vmm/memory.c vmm/log.c
UNIT_DEPS_test_virtio_blk := $(BLK_TEST_DEPS)
UNIT_LIBS_test_virtio_blk := -luring -lpthread
UNIT_DEPS_test_virtio_blk_state := $(BLK_TEST_DEPS)
UNIT_LIBS_test_virtio_blk_state := -luring -lpthread
UNIT_DEPS_test_virtio_blk_update := $(BLK_TEST_DEPS) virtio/net.c virtio/net_io.c virtio/net_frame.c \
	virtio/vsock.c virtio/vsock_rx.c virtio/vsock_conn.c virtio/vsock_pkt.c \
	virtio/virtio.c virtio/registry.c vmm/bus.c vmm/loop.c
UNIT_LIBS_test_virtio_blk_update := -luring -lpthread

# A guest-side probe (static) that hands a virtio-blk device hostile queues through /dev/mem;
# the integration tests copy it onto a drive image.
VQ_CORRUPT := $(BUILD)/tests/guest/vq_corrupt
TEST_PROGRAMS += $(VQ_CORRUPT)
$(VQ_CORRUPT): tests/guest/vq_corrupt.c tests/guest/mmio_probe.h virtio/module.mk
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -fPIE -MMD -MP,$(CFLAGS)) -static -o $@ $<
UNIT_DEPS_test_virtio_drive := vmm/drive.c vmm/config.c vmm/log.c
UNIT_DEPS_test_virtio_irqmod := virtio/irqmod.c
UNIT_DEPS_test_virtio_blk_req := virtio/blk_req.c virtio/tbucket.c vmm/log.c
UNIT_LIBS_test_virtio_blk_req := -lpthread

# blkbench: a static guest-side block benchmark (tests/bench, `make bench-blk`).
BLKBENCH := $(BUILD)/tests/guest/blkbench
TEST_PROGRAMS += $(BLKBENCH)
$(BLKBENCH): tests/guest/blkbench.c virtio/module.mk
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -fPIE -MMD -MP,$(CFLAGS)) -static -o $@ $<
UNIT_DEPS_test_virtio_state := virtio/mmio.c virtio/mmio_state.c virtio/mmio_regs.c virtio/queue.c vmm/memory.c vmm/log.c


# virtio-net: the device against the transport with a socketpair for its TAP, and its headers.
UNIT_DEPS_test_virtio_net := virtio/net.c virtio/net_io.c virtio/net_frame.c virtio/blk_req.c virtio/tbucket.c virtio/irqmod.c \
	virtio/mmio.c virtio/mmio_state.c virtio/mmio_regs.c virtio/queue.c vmm/memory.c vmm/log.c
FUZZ_DEPS_fuzz_virtio_net := virtio/net.c virtio/net_io.c virtio/net_frame.c virtio/blk_req.c virtio/tbucket.c virtio/irqmod.c \
	virtio/mmio.c virtio/mmio_state.c virtio/mmio_regs.c virtio/queue.c vmm/memory.c vmm/log.c
UNIT_LIBS_test_virtio_net := -lpthread
FUZZ_LIBS_fuzz_virtio_net := -lpthread

# A guest-side probe (static) that hands a virtio-net device hostile tx input through /dev/mem
# (tests/integration/test_virtio_net.py copies it onto a drive image).
NET_HOSTILE := $(BUILD)/tests/guest/net_hostile
TEST_PROGRAMS += $(NET_HOSTILE)
$(NET_HOSTILE): tests/guest/net_hostile.c tests/guest/mmio_probe.h virtio/module.mk
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -fPIE -MMD -MP,$(CFLAGS)) -static -o $@ $<

# virtio-vsock: the device against the transport with real Unix sockets, and its packets.
VSOCK_SRCS := virtio/vsock.c virtio/vsock_rx.c virtio/vsock_conn.c virtio/vsock_pkt.c virtio/net_frame.c virtio/blk_req.c \
	virtio/tbucket.c virtio/mmio.c virtio/mmio_state.c virtio/mmio_regs.c virtio/queue.c vmm/memory.c vmm/log.c
UNIT_DEPS_test_virtio_vsock := $(VSOCK_SRCS) tests/unit/vsock_harness.c
UNIT_LIBS_test_virtio_vsock := -lpthread
UNIT_DEPS_test_virtio_vsock_restore := $(UNIT_DEPS_test_virtio_vsock)
UNIT_LIBS_test_virtio_vsock_restore := -lpthread
UNIT_DEPS_test_virtio_vsock_pkt := virtio/vsock_pkt.c
FUZZ_DEPS_fuzz_virtio_vsock := $(VSOCK_SRCS)
FUZZ_LIBS_fuzz_virtio_vsock := -lpthread
# The restore fuzz target: the transport with virtio-blk and virtio-vsock, the UART, the i8042.
FUZZ_DEPS_fuzz_state_restore := $(sort virtio/mmio.c virtio/mmio_state.c virtio/mmio_regs.c virtio/queue.c $(VBLK_SRCS) \
	virtio/tbucket.c virtio/irqmod.c vmm/memory.c vmm/log.c vmm/serial.c vmm/i8042.c \
	$(VSOCK_SRCS))
FUZZ_LIBS_fuzz_state_restore := -luring -lpthread

# vsock_peer: a static guest-side vsock peer for the integration tests (on a tools drive).
VSOCK_PEER := $(BUILD)/tests/guest/vsock_peer
TEST_PROGRAMS += $(VSOCK_PEER)
$(VSOCK_PEER): tests/guest/vsock_peer.c virtio/module.mk
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -fPIE -MMD -MP,$(CFLAGS)) -static -o $@ $<
VSOCK_HOSTILE := $(BUILD)/tests/guest/vsock_hostile
TEST_PROGRAMS += $(VSOCK_HOSTILE)
$(VSOCK_HOSTILE): tests/guest/vsock_hostile.c virtio/module.mk
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -fPIE -MMD -MP,$(CFLAGS)) -static -o $@ $<
# vsockbench: a static guest-side vsock benchmark server (tests/bench/vsock-vs-qemu, `make bench-vsock`).
VSOCKBENCH := $(BUILD)/tests/guest/vsockbench
TEST_PROGRAMS += $(VSOCKBENCH)
$(VSOCKBENCH): tests/guest/vsockbench.c virtio/module.mk
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -fPIE -MMD -MP,$(CFLAGS)) -static -o $@ $<
