"""A working set in a jail, as an orchestrator shares one: the file is root's, read-only to the
VM's unprivileged uid. For such a file mincore(2) answers "in memory" for every page (the
kernel hides another's page cache), so a residency check by mincore would take a cold file for
a cached one and read it all before the load returns. ember asks cachestat(2) (which refuses),
takes the file for cold, and starts its read without waiting. Any /dev/kvm."""
import os
import shutil
import time

from test_api_boot import curl
from test_jailer_helpers import TIMEOUT
from test_snapshot_probe import TICK, snapshot  # noqa: F401 (a fixture)
from test_snapshot_uffd_jailed import GID, UID, base, jail  # noqa: F401 (a fixture)
from test_snapshot_ws import big_working_set, cold, prefetch_line, record, wait_all_cached


def test_a_shared_cold_working_set_is_read_not_waited_for(base, snapshot, tmp_path):
    snap, mem, last = snapshot
    proc, root, out = jail(base, "ws-vm", [])
    try:
        for p in (snap, mem):
            shutil.copy(p, root / p.name)
            os.chown(root / p.name, UID, GID)
        ws = root / "shared.ws"
        npages = big_working_set(ws, record(tmp_path, snap, mem), mem)
        os.chmod(ws, 0o644)  # root's: the VM's uid may read it, not write it
        cold(ws)
        code, text = curl(root / "run" / "api.sock", "PUT", "/snapshot/load", {
            "snapshot_path": snap.name, "resume_vm": True, "mem_backend": {
                "backend_type": "File", "backend_path": mem.name, "working_set": ws.name}})
        assert code == 204, text + out.read_text()
        want = f"0 KiB cached (page tables filled), {npages * 4} KiB being read"
        assert want in prefetch_line(out.read_text())
        wait_all_cached(ws, npages, os.path.getsize(ws) // 4096 - npages)
        deadline = time.monotonic() + TIMEOUT
        while not [t for t in TICK.findall(out.read_bytes()) if int(t) > last + 1]:
            assert time.monotonic() < deadline and proc.poll() is None, out.read_text()[-2000:]
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(timeout=TIMEOUT)
