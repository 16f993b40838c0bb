"""Diff snapshots of the probe guest's heartbeat (any /dev/kvm: these run directly). A chain —
Full, then two Diffs — restored both as layers over the base (no merge) and from a merged base
gives the very memory the source had (byte for byte against a Full snapshot taken at the same
moment), and the guest counts on; layers given wrong (out of order, from another snapshot, too
few) and a Diff without dirty tracking are 400s with reasons."""
import filecmp
import os
import shutil
import subprocess

import pytest

from api_client import Ember, fault
from ember_vm import EMBER, PROBE
from test_snapshot_probe import start, ticks, wait_tick

pytestmark = pytest.mark.usefixtures("dev_kvm")


def boot(d, track=True):
    e = start(d)
    assert e.put("/machine-config", json={"vcpu_count": 1, "mem_size_mib": 64,
                                          "track_dirty_pages": track}).status_code == 204
    assert e.put("/boot-source", json={"kernel_image_path": str(PROBE),
                                       "boot_args": "c"}).status_code == 204
    assert e.put("/actions", json={"action_type": "InstanceStart"}).status_code == 204
    return e


def snap(e, d, name, kind):
    r = e.put("/snapshot/create", json={"snapshot_type": kind,
                                       "snapshot_path": str(d / f"{name}.snap"),
                                       "mem_file_path": str(d / f"{name}.mem")})
    assert r.status_code == 204, r.text
    return d / f"{name}.snap", d / f"{name}.mem"


def step(e):
    """Resumes the guest until it counted two more ticks, and pauses it again."""
    assert e.patch("/vm", json={"state": "Resumed"}).status_code == 204
    seen = ticks(e)  # none yet on a VM loaded paused: its first tick then
    wait_tick(e, (seen[-1] if seen else wait_tick(e, 0)) + 1)
    assert e.patch("/vm", json={"state": "Paused"}).status_code == 204


@pytest.fixture
def chain(tmp_path):
    """base (Full), d1, d2 (Diffs) and ref: a Full snapshot at d2's moment."""
    (tmp_path / "src").mkdir()
    e = boot(tmp_path / "src")
    try:
        wait_tick(e, 2)
        assert e.patch("/vm", json={"state": "Paused"}).status_code == 204
        files = {"base": snap(e, tmp_path, "base", "Full")}
        step(e)
        files["d1"] = snap(e, tmp_path, "d1", "Diff")
        step(e)
        files["d2"] = snap(e, tmp_path, "d2", "Diff")
        files["ref"] = snap(e, tmp_path, "ref", "Full")  # the same paused moment
    finally:
        e.close()
    return files


def load(d, body):
    d.mkdir()
    e = start(d)
    return e, e.put("/snapshot/load", json=body)


def backend(base, layers=None):
    mb = {"backend_type": "File", "backend_path": str(base)}
    if layers is not None:
        mb["layers"] = [str(p) for p in layers]
    return mb


def same_memory_as_ref(e, d, ref_mem):
    """The restored (paused, never run) VM's memory, snapshotted again, equals ref's."""
    _, mem = snap(e, d, "again", "Full")
    assert os.path.getsize(mem) == os.path.getsize(ref_mem)
    assert filecmp.cmp(mem, ref_mem, shallow=False)


def test_diffs_are_small(chain):
    full = os.stat(chain["base"][1])
    for d in ("d1", "d2"):
        st = os.stat(chain[d][1])
        assert st.st_size == full.st_size  # the RAM's size, Firecracker's layout
        assert st.st_blocks < full.st_blocks / 4, (d, st.st_blocks, full.st_blocks)


def test_a_booted_vms_second_diff_holds_only_what_changed(tmp_path):
    """A booted VM's first Diff holds every page (nothing stands under it); the next one only
    the pages written since the first (the devices' marks were once kept until a Full)."""
    (tmp_path / "src").mkdir()
    e = boot(tmp_path / "src")
    try:
        wait_tick(e, 2)
        assert e.patch("/vm", json={"state": "Paused"}).status_code == 204
        _, first = snap(e, tmp_path, "first", "Diff")
        step(e)
        _, second = snap(e, tmp_path, "second", "Diff")
    finally:
        e.close()
    a, b = os.stat(first), os.stat(second)
    assert a.st_blocks * 512 >= 64 << 20, a.st_blocks  # every page of the 64 MiB
    assert b.st_blocks < a.st_blocks / 4, (b.st_blocks, a.st_blocks)


def test_layers_load_without_a_merge(tmp_path, chain):
    d2_snap = chain["d2"][0]
    e, r = load(tmp_path / "layered", {
        "snapshot_path": str(d2_snap), "resume_vm": False,
        "mem_backend": backend(chain["base"][1], [chain["d1"][1], chain["d2"][1]])})
    try:
        assert r.status_code == 204, r.text
        same_memory_as_ref(e, tmp_path / "layered", chain["ref"][1])
        assert e.patch("/vm", json={"state": "Resumed"}).status_code == 204
        assert wait_tick(e, 0) > 4
    finally:
        e.close()


def merge(*args):
    return subprocess.run([str(EMBER), "snapshot", "merge", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


TAG = "user.ember.mem_id"


def test_a_merged_base_loads_the_same(tmp_path, chain):
    """A merge checked against the snapshot retags the base with the newest layer's image (it
    holds that image now): the layers it holds are not asked for again. A merge without
    --snapshot cannot know the image: the old tag is dropped."""
    merged = tmp_path / "merged.mem"
    shutil.copy2(chain["base"][1], merged)  # with its tag
    assert os.getxattr(merged, TAG) != os.getxattr(chain["d2"][1], TAG)
    r = merge("--snapshot", chain["d2"][0], merged, chain["d1"][1], chain["d2"][1])
    assert r.returncode == 0, r.stderr
    assert "pages merged" in r.stdout
    assert os.getxattr(merged, TAG) == os.getxattr(chain["d2"][1], TAG)
    e, r = load(tmp_path / "merged", {"snapshot_path": str(chain["d2"][0]), "resume_vm": False,
                                      "mem_backend": backend(merged)})
    try:
        assert r.status_code == 204, r.text
        same_memory_as_ref(e, tmp_path / "merged", chain["ref"][1])
    finally:
        e.close()
    e, r = load(tmp_path / "stacked", {
        "snapshot_path": str(chain["d2"][0]), "resume_vm": False,
        "mem_backend": backend(merged, [chain["d1"][1], chain["d2"][1]])})
    try:
        assert "merged up to layer 2: it takes the 0 layers after that; 2 were given" in fault(r)
    finally:
        e.close()
    unchecked = tmp_path / "unchecked.mem"
    shutil.copy2(chain["base"][1], unchecked)
    assert merge(unchecked, chain["d1"][1], chain["d2"][1]).returncode == 0
    assert TAG not in os.listxattr(unchecked)
    assert filecmp.cmp(unchecked, merged, shallow=False)


def next_diff(tmp_path, snap_path, mem_backend):
    """Loads snap_path (track_dirty_pages) over mem_backend, runs two ticks, and takes a Diff
    d3 and a Full ref3 of that moment. Returns their (snapshot, memory) pairs."""
    e, r = load(tmp_path / "loaded", {"snapshot_path": str(snap_path), "resume_vm": False,
                                      "track_dirty_pages": True, "mem_backend": mem_backend})
    try:
        assert r.status_code == 204, r.text
        step(e)
        return snap(e, tmp_path, "d3", "Diff"), snap(e, tmp_path, "ref3", "Full")
    finally:
        e.close()


def test_a_diff_of_a_loaded_vm_extends_its_chain(tmp_path, chain):
    """A VM loaded from base + layers with track_dirty_pages runs on, and its Diff is the next
    layer: base + d1 + d2 + d3 loads to the memory of a Full taken at d3's moment, and d3
    holds only what changed since the load (not all of RAM)."""
    d3, ref = next_diff(tmp_path, chain["d2"][0],
                        backend(chain["base"][1], [chain["d1"][1], chain["d2"][1]]))
    assert os.stat(d3[1]).st_blocks < os.stat(ref[1]).st_blocks / 4
    layers = [chain["d1"][1], chain["d2"][1], d3[1]]
    e, r = load(tmp_path / "chain3", {"snapshot_path": str(d3[0]), "resume_vm": False,
                                      "mem_backend": backend(chain["base"][1], layers)})
    try:
        assert r.status_code == 204, r.text
        same_memory_as_ref(e, tmp_path / "chain3", ref[1])
        assert e.patch("/vm", json={"state": "Resumed"}).status_code == 204
        assert wait_tick(e, 0) > 6
    finally:
        e.close()
    e, r = load(tmp_path / "short", {"snapshot_path": str(d3[0]),
                                     "mem_backend": backend(chain["base"][1], layers[:2])})
    try:
        assert "a base and 3 Diff layers; 2 were given" in fault(r)
    finally:
        e.close()


def test_a_diff_of_a_vm_loaded_from_a_merged_base_stacks_on_it(tmp_path, chain):
    """base + d1 + d2 merged in place (--snapshot): a VM loaded from it takes a Diff d3, whose
    chain is base, d1, d2, d3. The merged file holds image 2 (its tag says so), so it loads
    with d3 alone, and merges with d3 alone; the original base and d1, d2 are not needed."""
    merged = tmp_path / "merged.mem"
    shutil.copy2(chain["base"][1], merged)
    assert merge("--snapshot", chain["d2"][0], merged, chain["d1"][1],
                 chain["d2"][1]).returncode == 0
    d3, ref = next_diff(tmp_path, chain["d2"][0], backend(merged))
    e, r = load(tmp_path / "on-merged", {"snapshot_path": str(d3[0]), "resume_vm": False,
                                         "mem_backend": backend(merged, [d3[1]])})
    try:
        assert r.status_code == 204, r.text
        same_memory_as_ref(e, tmp_path / "on-merged", ref[1])
    finally:
        e.close()
    e, r = load(tmp_path / "all-again", {"snapshot_path": str(d3[0]), "mem_backend": backend(
        merged, [chain["d1"][1], chain["d2"][1], d3[1]])})
    try:
        assert "merged up to layer 2: it takes the 1 layer after that; 3 were given" in fault(r)
    finally:
        e.close()
    r = merge("--snapshot", d3[0], merged, chain["d1"][1])  # d1 is not layer 3
    assert r.returncode == 1 and "is not layer 3" in r.stderr, r.stderr
    r = merge("--snapshot", d3[0], merged, d3[1])
    assert r.returncode == 0, r.stderr
    assert os.getxattr(merged, TAG) == os.getxattr(d3[1], TAG)
    e, r = load(tmp_path / "merged3", {"snapshot_path": str(d3[0]), "resume_vm": False,
                                       "mem_backend": backend(merged)})
    try:
        assert r.status_code == 204, r.text
        same_memory_as_ref(e, tmp_path / "merged3", ref[1])
    finally:
        e.close()


def test_wrong_layers_are_refused(tmp_path, chain):
    # another VM's Diff: its pages are not the ones this chain recorded
    (tmp_path / "other").mkdir()
    o = boot(tmp_path / "other")
    try:
        wait_tick(o, 1)
        assert o.patch("/vm", json={"state": "Paused"}).status_code == 204
        snap(o, tmp_path, "obase", "Full")
        step(o)
        step(o)
        _, other_d1 = snap(o, tmp_path, "od1", "Diff")
    finally:
        o.close()
    d2 = str(chain["d2"][0])
    base, d1m, d2m = chain["base"][1], chain["d1"][1], chain["d2"][1]
    tmp = tmp_path / "bad"
    tmp.mkdir()
    e = start(tmp)
    try:
        for layers, want in [([d2m, d1m], "is not layer 1"),
                             ([other_d1, d2m], "is not layer 1"),
                             ([d1m], "a base and 2 Diff layers; 1 were given"),
                             ([d1m, tmp_path / "none.mem"], "Cannot open the memory layer"),
                             ([d1m, chain["ref"][1]], "is not layer 2")]:
            msg = fault(e.put("/snapshot/load", json={"snapshot_path": d2,
                                                      "mem_backend": backend(base, layers)}))
            assert want in msg, (layers, msg)
            assert e.get("/").json()["state"] == "Not started"
        # ember snapshot merge --snapshot makes the same checks, and writes nothing if one fails
        obase = tmp_path / "obase.mem"
        for b, layers, want in [(base, [d2m, d1m], "is not layer 1"),
                                (base, [other_d1, d2m], "is not layer 1"),
                                (base, [d1m], "a base and 2 Diff layers; 1 were given"),
                                (base, [d1m, chain["ref"][1]], "is not layer 2"),
                                (obase, [d1m, d2m], "is not the base of")]:
            target = tmp / "merge-target.mem"
            shutil.copy2(b, target)  # with its id tag (a user xattr)
            r = merge("--snapshot", d2, target, *layers)
            assert r.returncode == 1 and want in r.stderr, (layers, r.stderr)
            assert filecmp.cmp(target, b, shallow=False), layers  # untouched
        target = tmp / "merge-target.mem"
        shutil.copy2(base, target)
        assert merge("--snapshot", tmp_path / "none.snap", target, d1m, d2m).returncode == 1
        assert filecmp.cmp(target, base, shallow=False)
        assert merge(tmp / "none.mem", d1m).returncode == 1
        assert "none.mem: No such file or directory" in merge(tmp / "none.mem", d1m).stderr
        assert "File backend only" in fault(e.put("/snapshot/load", json={
            "snapshot_path": d2, "mem_backend": {"backend_type": "Uffd", "backend_path": "x",
                                                 "layers": [str(d1m)]}}))
        # still loads right afterwards
        r = e.put("/snapshot/load", json={"snapshot_path": d2, "resume_vm": True,
                                          "mem_backend": backend(base, [d1m, d2m])})
        assert r.status_code == 204, r.text
        assert wait_tick(e, 0) > 4
    finally:
        e.close()


def test_diff_needs_dirty_tracking(tmp_path):
    e = boot(tmp_path, track=False)
    try:
        wait_tick(e, 1)
        assert e.patch("/vm", json={"state": "Paused"}).status_code == 204
        msg = fault(e.put("/snapshot/create", json={
            "snapshot_type": "Diff", "snapshot_path": str(tmp_path / "d.snap"),
            "mem_file_path": str(tmp_path / "d.mem")}))
        assert "dirty page tracking disabled" in msg
    finally:
        e.close()
