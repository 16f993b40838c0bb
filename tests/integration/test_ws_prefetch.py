"""The working-set prefetch fills the page tables of its mappings at load (MADV_POPULATE_READ),
read-only: right after a paused load, before the guest touched anything, every recorded page is
present in ember's mappings of the working-set file, and none of them was copied (no anonymous
pages there: clones keep sharing the file's page cache). Runs on any /dev/kvm (probe guest)."""
import struct

import pytest

from test_snapshot_probe import snapshot  # noqa: F401 (a fixture)
from test_snapshot_ws import paused_load, record

pytestmark = pytest.mark.usefixtures("dev_kvm")


def ws_mappings(pid, ws):
    """Sums Rss and Anonymous (KiB) over the process's mappings of the file ws."""
    rss = anon = 0
    inside = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and ":" not in head[0]:  # a mapping's first line
                inside = len(head) >= 6 and head[-1] == str(ws)
            elif inside and head[0] == "Rss:":
                rss += int(head[1])
            elif inside and head[0] == "Anonymous:":
                anon += int(head[1])
    return rss, anon


def test_prefetch_maps_every_page_before_the_guest_runs(tmp_path, snapshot):
    snap, mem, _ = snapshot
    ws = record(tmp_path, snap, mem)
    npages = struct.unpack_from("<Q", ws.read_bytes()[:64], 16)[0]
    assert npages > 0
    e, _ = paused_load(tmp_path, snap, mem, ws)
    try:
        rss, anon = ws_mappings(e.proc.pid, ws.resolve())
        assert rss == npages * 4, (rss, npages)  # every page, though the guest never ran
        assert anon == 0  # mapped from the page cache, not copied
    finally:
        e.close()
