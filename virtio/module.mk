# virtio/: the virtqueue, the virtio-mmio transport and the devices (linked into build/ember
# through vmm/module.mk). Unit tests and fuzz targets of this directory:
UNIT_DEPS_test_virtio_queue := virtio/queue.c vmm/memory.c
FUZZ_DEPS_fuzz_virtio_queue := virtio/queue.c vmm/memory.c
UNIT_DEPS_test_virtio_mmio  := virtio/mmio.c virtio/queue.c vmm/memory.c vmm/log.c
