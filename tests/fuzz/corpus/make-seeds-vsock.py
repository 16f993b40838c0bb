#!/usr/bin/env python3
"""Writes corpus/virtio_vsock/ (tests/fuzz/fuzz_virtio_vsock.c): 8 bytes (queue sizes, EVENT_IDX,
reset, the host client's byte count), the client's bytes, then guest RAM with the three rings:
rx buffers, a tx packet (REQUEST to port 5, or RW), an event buffer."""
import pathlib
import struct

OUT = pathlib.Path(__file__).resolve().parent / "virtio_vsock"


def desc(addr, length, flags, nxt=0):
    return struct.pack("<QIHH", addr, length, flags, nxt)


def hdr(op, src=1000, dst=5, length=0, typ=1, cid=3, flags=0, buf_alloc=65536, fwd=0):
    return struct.pack("<QQIIIHHIII", cid, 2, src, dst, length, typ, op, flags, buf_alloc, fwd)


def ram(tx_packets):
    m = bytearray(0x5000)
    for i in range(16):  # rx: 16 writable buffers of 256 bytes
        m[16 * i:16 * i + 16] = desc(0x1000 + 0x100 * i, 0x100, 2)
    m[0x100:0x104] = struct.pack("<HH", 0, 16)
    for i in range(16):
        m[0x104 + 2 * i:0x106 + 2 * i] = struct.pack("<H", i)
    at = 0x3000
    for i, p in enumerate(tx_packets):
        m[at:at + len(p)] = p
        m[0x400 + 16 * i:0x410 + 16 * i] = desc(at, len(p), 0)
        m[0x504 + 2 * i:0x506 + 2 * i] = struct.pack("<H", i)
        at += 0x100
    m[0x500:0x504] = struct.pack("<HH", 0, len(tx_packets))
    m[0x800:0x810] = desc(0x4000, 8, 2)
    m[0x900:0x906] = struct.pack("<HHH", 0, 1, 0)
    return bytes(m)


def seed(name, first, packets, reset=0):
    h = bytes([4, 4, 1, 0x20, 0, 0, reset, len(first)])
    (OUT / name).write_bytes(h + first + ram(packets))


OUT.mkdir(exist_ok=True)
seed("host-connect", b"CONNECT 52\n", [hdr(2, src=52, dst=1 << 30)])
seed("guest-request", b"", [hdr(1), hdr(5, length=4) + b"abcd", hdr(4, flags=3)])
seed("garbage-line", b"GET / HTTP/1.1\n", [hdr(7), hdr(6)])
seed("bad-type", b"connect 5\n", [hdr(1, typ=2), hdr(5, length=400)], reset=1)
