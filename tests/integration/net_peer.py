"""The host end of the virtio-net tests, run inside the test's network namespace
(`ip netns exec NS python3 net_peer.py ADDR SIZE SLOW_SIZE TIMEOUT`). All four ports listen from
the start (a guest that connects early waits in the backlog, never meets a refusal); then, in
order, each accept and each transfer bounded by TIMEOUT seconds:

  :5002  sends SIZE random bytes to the guest, then closes     -> {"sent_md5": ...}
  :5001  receives SIZE bytes from the guest                    -> {"recv_md5": ..., "secs": ...}
  then prints {"ready": true} and waits for a line on stdin (the test PATCHes meanwhile)
  :5003  sends "go" and closes
  :5004  receives SLOW_SIZE bytes                               -> {"slow_secs": ...}
  then waits for a line on stdin (the test looks at the running VM)
  :5005  sends "bye" and closes (the guest may end)

One JSON object per line on stdout.

`net_peer.py rx-limit ADDR SIZE SIZE2 TIMEOUT` (the rx rate-limit test): on :5006 sends SIZE
bytes to the guest and closes, then waits for the guest's connection to :5007 (it has received
everything): prints {"rx_secs": ..., "sent": SIZE}, from the first accept to the second. Then
waits for a line on stdin (the test PATCHes the limiter meanwhile) and does the same with SIZE2
bytes on :5008 and :5009: {"rx2_secs": ..., "sent": SIZE2}."""
import hashlib
import json
import os
import socket
import sys
import time


def out(**kw):
    print(json.dumps(kw), flush=True)


def listen(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(1)
    return s


def accept(s, timeout):
    s.settimeout(timeout)
    c, _ = s.accept()
    c.settimeout(timeout)
    s.close()
    return c


def receive(c, size, deadline):
    md5, got = hashlib.md5(), 0
    while got < size:
        if time.monotonic() > deadline:
            raise TimeoutError(f"received {got} of {size} bytes")
        b = c.recv(min(1 << 16, size - got))
        if not b:
            break
        md5.update(b)
        got += len(b)
    return got, md5.hexdigest()


def rx_limit(addr, size, size2, timeout):
    ports = {p: listen(addr, p) for p in (5006, 5007, 5008, 5009)}
    for data, done, n, key in ((5006, 5007, size, "rx_secs"), (5008, 5009, size2, "rx2_secs")):
        if data == 5008:
            sys.stdin.readline()
        with accept(ports[data], timeout) as c:
            t0 = time.monotonic()
            c.sendall(os.urandom(n))
        # The guest's nc ends once it has read everything up to the close; then it connects
        # here (its own close of the data port says nothing: nc half-closes at once, its
        # stdin is empty).
        with accept(ports[done], timeout):
            out(**{key: time.monotonic() - t0, "sent": n})


def main():
    if sys.argv[1] == "rx-limit":
        rx_limit(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return
    addr, size, slow, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    ports = {p: listen(addr, p) for p in (5001, 5002, 5003, 5004, 5005)}
    data = os.urandom(size)
    with accept(ports[5002], timeout) as c:
        c.sendall(data)
    out(sent_md5=hashlib.md5(data).hexdigest())
    with accept(ports[5001], timeout) as c:
        t0 = time.monotonic()
        got, md5 = receive(c, size, t0 + timeout)
        out(recv_md5=md5, recv_len=got, secs=time.monotonic() - t0)
    out(ready=True)
    sys.stdin.readline()
    with accept(ports[5003], timeout) as c:
        c.sendall(b"go\n")
    with accept(ports[5004], timeout) as c:
        t0 = time.monotonic()
        got, _ = receive(c, slow, t0 + timeout)
        out(slow_len=got, slow_secs=time.monotonic() - t0)
    sys.stdin.readline()
    with accept(ports[5005], timeout) as c:
        c.sendall(b"bye\n")


if __name__ == "__main__":
    main()
