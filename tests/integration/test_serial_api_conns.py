"""The API's connection limit against a real keep-alive client (issue 19 item 5, F17).

python's requests-unixsocket keeps one connection pool per full URL, so a plain Session doing
PUT /drives/d0, /drives/d1, ... holds one idle keep-alive connection per drive id. ember keeps
Firecracker's limit: the 11th id gets 503 + Connection: close, idle or not. The tests' own
client (api_client.session) keys its pools by the socket and stays within the limit; ember's
own --http-api-idle-give-way lets an idle connection give way instead.
"""
import subprocess
import time

import requests_unixsocket

from api_client import Ember

CONN_LIMIT = 10


def ember_conns(pid):
    """Unix-socket connections ember holds, from ss (its listen socket excluded)."""
    out = subprocess.run(["ss", "-x", "-p", "state", "connected"], capture_output=True,
                         text=True, timeout=30).stdout
    return sum(1 for line in out.splitlines() if f"pid={pid}," in line)


def put_drive(vm, session, disk, d):
    return session.put(f"{vm.base}/drives/{d}", timeout=30,
                       json={"drive_id": d, "path_on_host": str(disk),
                             "is_root_device": False, "is_read_only": True})


def test_per_url_pools_meet_firecrackers_limit(ember_bin, scratch, tmp_path):
    disk = tmp_path / "disk"
    disk.write_bytes(bytes(4096))
    vm = Ember.start(ember_bin, scratch, "--id", "conns")
    plain = requests_unixsocket.Session()
    try:
        codes = [put_drive(vm, plain, disk, f"d{i}").status_code for i in range(CONN_LIMIT)]
        assert codes == [204] * CONN_LIMIT, codes
        r = put_drive(vm, plain, disk, f"d{CONN_LIMIT}")  # an 11th connection: refused
        assert r.status_code == 503 and r.headers.get("Connection") == "close", r.text
        assert r.json()["error"] == "Too many open connections"
        plain.close()  # the client closes its idle connections: served again
        deadline = time.monotonic() + 30
        while ember_conns(vm.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(vm.get("/vm/config").json()["drives"]) == CONN_LIMIT
    finally:
        plain.close()
        vm.close()


def test_one_connection_session_stays_within_the_limit(ember_bin, scratch, tmp_path):
    disk = tmp_path / "disk"
    disk.write_bytes(bytes(4096))
    vm = Ember.start(ember_bin, scratch, "--id", "conns")
    try:
        for i in range(30):
            d = f"d{i % 15}"
            r = put_drive(vm, vm.session, disk, d)
            assert r.status_code == 204, (i, r.status_code, r.text)
            assert ember_conns(vm.proc.pid) == 1
        assert len(vm.get("/vm/config").json()["drives"]) == 15
    finally:
        vm.close()


def test_idle_give_way_lets_per_url_pools_in(ember_bin, scratch, tmp_path):
    disk = tmp_path / "disk"
    disk.write_bytes(bytes(4096))
    vm = Ember.start(ember_bin, scratch, "--id", "conns", "--http-api-idle-give-way")
    plain = requests_unixsocket.Session()
    try:
        most = 0
        for i in range(30):
            r = put_drive(vm, plain, disk, f"d{i % 15}")  # 15 URLs, each its own pool
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
        plain.close()
        vm.close()
