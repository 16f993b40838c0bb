"""A page-fault handler as Firecracker's example on_demand handler works, for the Uffd backend
tests: `uffd_handler.py SOCKET MEMFILE MODE`. It binds SOCKET, prints "listening", accepts one
connection and reads the one handshake message (the JSON regions and the uffd as SCM_RIGHTS),
checks it as Firecracker's example does (sizes add up to the memory file, one power-of-two page
size), then by MODE:

  serve   copies each faulting page from MEMFILE (UFFDIO_COPY), forever; prints "served N" to
          stderr every 64 pages and when it ends (SIGTERM)
  close   closes the connection without reading the handshake, and exits (a peer that goes away)
  exit    reads the handshake, waits a second, then exits without serving (a handler that dies
          once the VM runs)
  silent  reads the handshake, then lives on (120 s at most) without reading a fault (a hung
          handler)
  drop    reads the handshake, closes the uffd and the connection, and lives on as silent
  lag     serves as serve does, but waits 3 s before it reads each fault (a slow handler
          whose queue is never empty at a look, yet makes progress)
In serve mode it first prints "features 0x..." (the uffd's features, from its fdinfo).
"""
import ctypes
import fcntl
import json
import mmap
import os
import select
import signal
import socket
import struct
import sys
import time

UFFDIO_COPY = 0xC028AA03  # _IOWR(0xAA, 0x03, struct uffdio_copy): 40 bytes
UFFD_EVENT_PAGEFAULT = 0x12
MSG_SIZE = 32


def main():
    path, memfile, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    print("listening", flush=True)
    conn, _ = srv.accept()
    if mode == "close":
        conn.close()
        return
    fds = []
    msg, anc, _, _ = conn.recvmsg(1024, socket.CMSG_SPACE(4))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.append(struct.unpack("i", data[:4])[0])
    regions = json.loads(msg)
    assert fds, "no uffd came with the handshake"
    size = os.path.getsize(memfile)
    assert sum(r["size"] for r in regions) == size, (regions, size)
    sizes = {r["page_size"] for r in regions}
    assert len(sizes) == 1 and sizes.pop() == 4096 and all(
        r["page_size_kib"] == r["page_size"] for r in regions), regions
    if mode == "exit":  # after ember answered the load: the guest then waits for a page
        time.sleep(1)
        return
    if mode in ("silent", "drop"):
        if mode == "drop":
            os.close(fds[0])
            conn.close()
        time.sleep(120)
        return
    uffd = fds[0]
    with open(f"/proc/self/fdinfo/{uffd}") as f:  # "API:\t<features>:<api>:<ioctls>"
        api = next(l for l in f if l.startswith("API:")).split()[1]
    print(f"features 0x{api.split(':')[0]}", file=sys.stderr, flush=True)
    fd = os.open(memfile, os.O_RDONLY)
    mem = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    served = [0]

    def done(*_):
        print(f"served {served[0]}", file=sys.stderr, flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, done)
    pending = []
    while True:
        select.select([uffd], [], [], 0.05 if pending else None)
        if mode == "lag":
            time.sleep(3)
        try:
            data = os.read(uffd, MSG_SIZE * (1 if mode == "lag" else 16))
        except BlockingIOError:
            data = b""
        for off in range(0, len(data) - MSG_SIZE + 1, MSG_SIZE):
            event = data[off]
            if event == UFFD_EVENT_PAGEFAULT:
                addr = struct.unpack_from("<Q", data, off + 16)[0]
                pending.append(addr & ~4095)
        retry = []
        for page in pending:
            r = next(r for r in regions
                     if r["base_host_virt_addr"] <= page < r["base_host_virt_addr"] + r["size"])
            src = base + r["offset"] + page - r["base_host_virt_addr"]
            arg = bytearray(struct.pack("<QQQQq", page, src, 4096, 0, 0))
            try:
                fcntl.ioctl(uffd, UFFDIO_COPY, arg)
                served[0] += 1
                if served[0] % 64 == 0:
                    print(f"served {served[0]}", file=sys.stderr, flush=True)
            except FileExistsError:
                pass  # another fault on the same page was served first
            except BlockingIOError:
                retry.append(page)  # a remove event is queued: after it
        pending = retry


if __name__ == "__main__":
    main()
