#!/usr/bin/env python3
"""Writes the hand-made seeds of three fuzz targets; run it again after changing a target's input
encoding.

corpus/virtio_mmio/ (tests/fuzz/fuzz_virtio_mmio.c): the drive byte (0 Sync, 1 read-only,
2 Async, 3 rate-limited) followed by operations in the target's encoding (see enum op there).

corpus/virtio_net/ (tests/fuzz/fuzz_virtio_net.c): 8 bytes (features, queue sizes, reset, frame
length / 8), the frame the host sends, then guest RAM with both rings and well-formed chains.

corpus/vmm_loader/ (tests/fuzz/fuzz_vmm_loader.c): minimal kernel images the loader accepts
(ELF vmlinux, ELF with a PVH note, bzImage) and a few it must refuse. All stay under 4 KiB,
libFuzzer's default input size, and load into the target's guest RAM (1.5 MiB from 0, 64 KiB
at 4 GiB). The last byte of an image that loads picks the PVH entry (odd) and the vCPU count.

corpus/state_restore/ (tests/fuzz/fuzz_state_restore.c): the target byte (0 virtio-blk, 1 UART,
2 i8042, 3 virtio-vsock), patches to the saved state (offsets as the structs' static-asserted layouts), then
operations."""
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent

# ---- virtio_mmio --------------------------------------------------------------------------
(WRITE32, READ, WRITE, POKE, INIT, REQUEST, NOTIFY, EVENT, PATCH, STATUS, CHECK_INT) = range(11)
T_IN, T_OUT, T_FLUSH, T_GET_ID, T_BAD = range(5)  # indexes into the target's type table
DESC, AVAIL, USED, HDR, STAT, DATA = 0x1000, 0x2000, 0x3000, 0x4000, 0x5000, 0xb000
F_NO_EVENT_IDX, F_UNOFFERED, F_NO_V1, F_QUEUE1, F_USED_HIGH = 1, 2, 4, 8, 16
F_FLUSH, F_RO, F_SEG_MAX = 32, 64, 128


def w32(reg, v):
    return struct.pack("<BBI", WRITE32, reg // 4, v)


def rd(off, size):
    return struct.pack("<BHB", READ, off, {1: 0, 2: 1, 4: 2, 8: 3}[size])


def wr(off, size, v):
    return struct.pack("<BHBQ", WRITE, off, {1: 0, 2: 1, 4: 2, 8: 3}[size], v)


def poke(gpa, data):
    return struct.pack("<BHB", POKE, gpa, len(data)) + data


def init(f=F_FLUSH | F_SEG_MAX, qlog=4, desc=DESC, avail=AVAIL, used=USED):
    return struct.pack("<BBBHHH", INIT, f, qlog, desc, avail, used)


def req(t, sector=0, length=512, segs=1, n=0, data=DATA, ro_status=False):
    return struct.pack("<BBBHBHHH", REQUEST, t | (0x80 if ro_status else 0), sector, length,
                       segs, HDR + 16 * n, data, STAT + n)


def notify(v=0):
    return bytes([NOTIFY, v])


def event(which):
    return bytes([EVENT, which])


def patch(what):
    return bytes([PATCH, what])


def status(v):
    return bytes([STATUS, v])


ACK = bytes([CHECK_INT])

MMIO_SEEDS = {
    "read": bytes([0]) + init() + req(T_IN, 1, 1024, 2) + notify() + ACK + rd(0x100, 8)
    + rd(0x70, 4),
    "write_flush_id": bytes([0]) + init() + req(T_OUT, 2, 512, 1, 0) + req(T_FLUSH, n=1, segs=0)
    + req(T_GET_ID, length=20, n=2) + req(T_BAD, n=3) + notify() + event(2) + ACK,
    "read_only": bytes([1]) + init(F_RO | F_SEG_MAX) + req(T_OUT, 0, 512) + req(T_IN, 15, 1024, n=1)
    + notify() + ACK,
    "async": bytes([2]) + init() + b"".join(req(T_IN if i % 2 else T_OUT, i, 512, 1, i,
                                               DATA + 512 * i) for i in range(6))
    + notify() + event(0) + event(0) + ACK + req(T_FLUSH, n=6, segs=0) + notify() + event(0),
    "rate_limited": bytes([3]) + init() + b"".join(req(T_IN, i, 2048, 1, i) for i in range(4))
    + notify() + event(1) + patch(4 | 8 | 16 | 32) + notify() + event(1) + ACK,
    "bad_queue": bytes([0]) + init(F_USED_HIGH | F_SEG_MAX) + ACK + rd(0x70, 4) + status(0)
    + init(F_QUEUE1) + status(0) + init(F_UNOFFERED) + rd(0x70, 4) + init(F_NO_V1)
    + init(qlog=4, desc=0x7ff0) + init() + req(T_IN) + notify(),
    "registers": bytes([0]) + b"".join(rd(off, 4) for off in range(0, 0x104, 4))
    + w32(0x14, 1) + rd(0x10, 4) + w32(0x14, 2) + rd(0x10, 4) + rd(0x0, 1) + rd(0x2, 2)
    + rd(0x8, 8) + rd(0x100, 4) + rd(0x10c, 4) + rd(0x110, 8) + rd(0xffc, 4) + w32(0x30, 5)
    + rd(0x34, 4) + rd(0x44, 4) + wr(0x70, 1, 1) + wr(0x100, 8, 1) + wr(0x64, 4, 3),
    "patch_swap": bytes([0]) + init() + patch(1) + rd(0xfc, 4) + rd(0x100, 8) + ACK
    + req(T_IN, 20, 512) + notify() + patch(2) + patch(3) + patch(1) + req(T_IN, 20, 512, n=1)
    + notify(),
    "manual_init": bytes([0]) + w32(0x70, 1) + w32(0x70, 3) + w32(0x24, 0)
    + w32(0x20, 1 << 29 | 1 << 9) + w32(0x24, 1) + w32(0x20, 1) + w32(0x70, 0xb) + w32(0x30, 0)
    + w32(0x38, 8) + w32(0x80, DESC) + w32(0x90, AVAIL) + w32(0xa0, USED) + w32(0x44, 1)
    + w32(0x70, 0xf) + rd(0x70, 4) + w32(0x38, 4) + w32(0x70, 0x8f) + rd(0x70, 4) + w32(0x70, 0)
    + w32(0x70, 0x80) + w32(0x70, 1),
    "moderation": bytes([0]) + init() + req(T_IN, 0, 512) + notify() + ACK + req(T_IN, 1, 512, n=1)
    + notify() + req(T_IN, 2, 512, n=2) + notify() + event(2) + req(T_IN, 3, 512, n=3) + event(2)
    + event(2) + event(2) + event(2) + ACK,
    # a descriptor that points at itself with NEXT: the device asks for a reset
    "desc_loop": bytes([0]) + init(qlog=2) + poke(DESC, struct.pack("<QIHH", HDR, 16, 1, 0))
    + poke(AVAIL, struct.pack("<HHH", 0, 1, 0)) + notify() + ACK + rd(0x70, 4) + status(0),
}


# ---- vmm_loader ---------------------------------------------------------------------------
MiB = 1 << 20
PT_LOAD, PT_NOTE = 1, 4
EHDR, PHDR = 64, 56


def elf(segments, entry, size=0x400):
    """segments: (p_type, paddr, offset, bytes, memsz); the file is padded to size."""
    img = bytearray(size)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)  # 64-bit, little-endian, version 1
    img[0:EHDR] = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, entry, EHDR, 0, 0, EHDR,
                                      PHDR, len(segments), 64, 0, 0)
    for i, (p_type, paddr, offset, data, memsz) in enumerate(segments):
        ph = struct.pack("<IIQQQQQQ", p_type, 5, offset, paddr, paddr, len(data), memsz, 16)
        img[EHDR + PHDR * i:EHDR + PHDR * (i + 1)] = ph
        img[offset:offset + len(data)] = data
    return bytes(img)


def note(name, n_type, desc):
    pad = lambda b: b + bytes(-len(b) % 4)
    return struct.pack("<III", len(name), len(desc), n_type) + pad(name) + pad(desc)


def bzimage(version=0x020F, setup_sects=1, jump=0x66, pref=MiB, init_size=0x20000,
            payload=0x240, xloadflags=3, loadflags=1):
    setup = (setup_sects or 4) + 1
    img = bytearray(setup * 512 + payload)
    img[0x1F1] = setup_sects
    struct.pack_into("<HBB4sH", img, 0x1FE, 0xAA55, 0xEB, jump, b"HdrS", version)
    img[0x211] = loadflags
    struct.pack_into("<IIBBH", img, 0x22C, 0x37FFFFFF, 0x200000, 1, 21, xloadflags)
    struct.pack_into("<QI", img, 0x258, pref, init_size)
    img[setup * 512:] = bytes((i * 7) & 0xFF for i in range(payload))
    return bytes(img)


def with_last(img, b):
    return img[:-1] + bytes([b])


CODE = bytes([0xF4] * 16)  # hlt
PVH = note(b"GNU\0", 3, bytes(20)) + note(b"Xen\0", 18, struct.pack("<I", MiB + 0x10))

LOADER_SEEDS = {
    "elf_min": elf([(PT_LOAD, MiB, 0x100, CODE, 0x1000)], MiB),
    "elf_pvh": with_last(elf([(PT_LOAD, MiB, 0x200, CODE, 0x1000),
                              (PT_NOTE, 0, 0x100, PVH, len(PVH))], MiB), 1),
    "elf_pvh_linux": elf([(PT_NOTE, 0, 0x100, PVH, len(PVH)),
                          (PT_LOAD, MiB, 0x200, CODE, 0x1000)], MiB),
    "elf_high_segment": elf([(PT_LOAD, MiB, 0x200, CODE, 0x2000),
                             (PT_LOAD, 1 << 32, 0x300, CODE, 0x100)], MiB + 4),
    "elf_below_1mib": elf([(PT_LOAD, 0x8000, 0x100, CODE, 0x100)], 0x8000),
    "bzimage_min": bzimage(),
    "bzimage_pref": with_last(bzimage(setup_sects=0, jump=0x7F, pref=MiB + 0x40000,
                                      init_size=0x30000, payload=1024), 7),
    "bzimage_old_protocol": bzimage(version=0x0208),
    "bzimage_32bit_only": bzimage(xloadflags=0),
    "bzimage_no_entry": bzimage(payload=0x200),  # too short to reach the 64-bit entry
    "not_a_kernel": bytes(0x400),
}


# ---- state_restore ------------------------------------------------------------------------
V_STATUS, V_ACTIVATED, Q0 = 8, 32, 40  # struct vmmio_state, then vq_state[0] at 40
Q_USED, Q_SIZE, Q_LAST_AVAIL = Q0 + 16, Q0 + 24, Q0 + 26
UART_RX_COUNT = 12  # struct serial_state
VSOCK_CID, VSOCK_PORT, VSOCK_PAD = 160, 168, 172  # struct vsock_state after three vq_states


def patches(*pairs):
    return bytes([len(pairs)]) + b"".join(struct.pack("<HB", off, v) for off, v in pairs)


def vop(op, x, v=0):
    return struct.pack("<BHH", op, x, v)


V_NOTIFY, V_READ4, V_WRITE, V_POKE, V_EVENT = 0, 1 | 2 << 6, 2, 3, 4
RESTORE_SEEDS = {
    "virtio_as_saved": bytes([0]) + patches() + vop(V_NOTIFY, 0) + vop(V_READ4, 0x70)
    + vop(V_WRITE, 0x64, 3) + vop(V_WRITE, 0x70, 0),
    "virtio_size_3": bytes([0]) + patches((Q_SIZE, 3)),
    "virtio_used_outside": bytes([0]) + patches((Q_USED, 0xf8), (Q_USED + 1, 0x7f)),
    "virtio_in_flight": bytes([0]) + patches((Q_LAST_AVAIL, 9)),
    "virtio_not_activated": bytes([0]) + patches((V_ACTIVATED, 0)),
    "virtio_failed": bytes([0]) + patches((V_STATUS, 0xcf)) + vop(V_NOTIFY, 0),
    "uart_as_saved": bytes([1]) + patches() + bytes([0, 0, 5, 0, 0x80, 0x41]),
    "uart_count": bytes([1]) + patches((UART_RX_COUNT, 0x41)),
    "i8042_as_saved": bytes([2]) + patches() + bytes([0, 0, 4, 0, 0x84, 0xaa, 0, 0]),
    "vsock_as_saved": bytes([3]) + patches() + vop(V_EVENT, 1) + vop(V_NOTIFY, 2)
    + vop(V_NOTIFY, 1) + vop(V_EVENT, 0),
    "vsock_cid_2": bytes([3]) + patches((VSOCK_CID, 2)),
    "vsock_cid_other": bytes([3]) + patches((VSOCK_CID, 4)) + vop(V_EVENT, 1),
    "vsock_port_low": bytes([3]) + patches((VSOCK_PORT + 3, 0)),
    "vsock_pad": bytes([3]) + patches((VSOCK_PAD, 1)),
    "vsock_ev_queue": bytes([3]) + patches((Q0 + 2 * 40 + 24, 3)) + vop(V_EVENT, 1),
}


# ---- virtio_net ---------------------------------------------------------------------------
def net_seed(features, frame, tx_hdr, tx_len, rx_lens):
    ram = bytearray(0x2000)
    def desc(base, i, addr, length, flags, nxt):
        struct.pack_into("<QIHH", ram, base + 16 * i, addr, length, flags, nxt)
    # tx: header + frame at 0x800, one or two descriptors
    ram[0x800:0x800 + 12] = tx_hdr
    ram[0x80c:0x80c + tx_len] = bytes([0xab]) * tx_len
    desc(0x400, 0, 0x800, 12, 1, 1)
    desc(0x400, 1, 0x80c, tx_len, 0, 0)
    struct.pack_into("<HHH", ram, 0x500, 0, 1, 0)
    # rx: buffers at 0x1000 on
    at = 0x1000
    for i, n in enumerate(rx_lens):
        desc(0, i, at, n, 2, 0)
        struct.pack_into("<H", ram, 0x104 + 2 * i, i)
        at += n
    struct.pack_into("<HH", ram, 0x100, 0, len(rx_lens))
    hdr = struct.pack("<I", features)[:3] + bytes([0x20, 4, 4, 0, len(frame) // 8])
    return hdr + frame + bytes(ram)


def vnet_hdr(flags=0, gso=0, hdr_len=0, gso_size=0, cs=0, co=0):
    return struct.pack("<BBHHHHH", flags, gso, hdr_len, gso_size, cs, co, 0)


F_CSUM, F_GCSUM, F_MAC, F_TSO4, F_MRG = 1, 2, 32, 1 << 11, 1 << 15
frame = vnet_hdr() + bytes(range(60)) + bytes(4)
NET_SEEDS = {
    "plain": net_seed(F_MAC, frame, vnet_hdr(), 60, [1600, 1600]),
    "merged": net_seed(F_MAC | F_MRG | F_GCSUM, frame, vnet_hdr(), 60, [20, 30, 40, 1000]),
    "csum_tso": net_seed(F_CSUM | F_TSO4, frame, vnet_hdr(1, 1, 54, 1448, 34, 16), 200, [1600]),
    "lying_csum": net_seed(F_CSUM, frame, vnet_hdr(1, 0, 0, 0, 500, 16), 60, [8]),
}


def main():
    for name, seeds in (
        ("virtio_mmio", MMIO_SEEDS),
        ("vmm_loader", LOADER_SEEDS),
        ("state_restore", RESTORE_SEEDS),
        ("virtio_net", NET_SEEDS),
    ):
        (HERE / name).mkdir(exist_ok=True)
        for seed, data in seeds.items():
            (HERE / name / seed).write_bytes(data)


if __name__ == "__main__":
    main()

