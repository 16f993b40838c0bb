"""The API's connection limit against a real keep-alive client (issue 19 item 5, F17).

python's requests-unixsocket keeps one connection pool per full URL, so a Session doing
PUT /drives/d0, /drives/d1, ... holds one idle keep-alive connection per drive id. With
Firecracker's limit of 10, the 11th id used to get 503. ember lets an idle connection (one
between two requests) give way to a new client instead; connections still in use keep the
limit (test_api_http.py: test_parallel_connections_up_to_the_limit).
"""
import subprocess
import time

from api_client import Ember

CONN_LIMIT = 10


def ember_conns(pid):
    """Unix-socket connections ember holds, from ss (its listen socket excluded)."""
    out = subprocess.run(["ss", "-x", "-p", "state", "connected"], capture_output=True,
                         text=True, timeout=30).stdout
    return sum(1 for line in out.splitlines() if f"pid={pid}," in line)


def test_session_with_many_drive_urls_stays_within_the_limit(ember_bin, scratch, tmp_path):
    disk = tmp_path / "disk"
    disk.write_bytes(bytes(4096))
    vm = Ember.start(ember_bin, scratch, "--id", "conns")
    try:
        most = 0
        for i in range(30):
            d = f"d{i % 15}"  # 15 URLs, each its own pool in the client
            r = vm.put(f"/drives/{d}", {"drive_id": d, "path_on_host": str(disk),
                                        "is_root_device": False, "is_read_only": True})
            assert r.status_code == 204, (i, r.status_code, r.text)
            most = max(most, ember_conns(vm.proc.pid))
        # an idle connection that gave way is closed a moment after the new one came in
        assert most <= CONN_LIMIT + 1, most
        deadline = time.monotonic() + 10
        while ember_conns(vm.proc.pid) > CONN_LIMIT and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ember_conns(vm.proc.pid) <= CONN_LIMIT
        assert len(vm.get("/vm/config").json()["drives"]) == 15
    finally:
        vm.close()
