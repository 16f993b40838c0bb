"""Seccomp (issue 17): every thread runs under its role's filter, a syscall a filter leaves out
kills ember with 148 and a line naming it, bad filter files are refused at start, the sandbox
self-check, PATCH /drives through the opener, and SECURITY.md's lists match the code.
They run the tiny probe guest, which any /dev/kvm runs (PVM too)."""
import json
import pathlib
import struct
import subprocess
import time

import pytest

from api_client import Ember, fault
from ember_vm import PROBE, REPO

TOOL = REPO / "build" / "ember-seccomp"
pytestmark = pytest.mark.usefixtures("dev_kvm")


PF_USER_WORKER = 0x4000


def threads(pid):
    """{tid: (name, Seccomp, Seccomp_filters)} of a running process's threads, less the kernel's
    user workers in it (KVM's NX huge page recovery worker, made at the first KVM_RUN, never
    runs user code)."""
    out = {}
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        flags = int((task / "stat").read_text().rsplit(")", 1)[1].split()[6])
        if flags & PF_USER_WORKER:
            continue
        status = dict(line.split(":\t", 1) for line in (task / "status").read_text().splitlines()
                      if ":\t" in line)
        out[task.name] = (status["Name"].strip(), int(status["Seccomp"]),
                          int(status["Seccomp_filters"]))
    return out


def by_name(pid):
    return {name: (mode, n) for name, mode, n in threads(pid).values()}


def boot_probe(vm, cmdline="i", vcpus=2, drive=None):
    assert vm.put("/boot-source", json={"kernel_image_path": str(PROBE),
                                        "boot_args": cmdline}).status_code == 204
    assert vm.put("/machine-config", json={"vcpu_count": vcpus,
                                           "mem_size_mib": 64}).status_code == 204
    if drive:
        assert vm.put("/drives/d1", json={"drive_id": "d1", "path_on_host": str(drive),
                                          "is_root_device": False,
                                          "is_read_only": False}).status_code == 204
    r = vm.put("/actions", json={"action_type": "InstanceStart"})
    assert r.status_code == 204, r.text


def wait_threads(pid, names, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if names <= set(by_name(pid)):
            return
        time.sleep(0.05)
    raise AssertionError(f"threads {names} never showed: {by_name(pid)}")


def filter_file(tmp_path, drop=None, edit=None):
    """A filter file from the built-in lists as JSON, minus drop=(role, syscall)."""
    lists = json.loads(subprocess.run([str(TOOL), "print", "--json"], check=True,
                                      capture_output=True, text=True).stdout)
    if drop:
        role, name = drop
        before = len(lists[role])
        lists[role] = [r for r in lists[role]
                       if (r if isinstance(r, str) else r["syscall"]) != name]
        assert len(lists[role]) < before, f"{name} is not in the {role} list"
    if edit:
        edit(lists)
    src = tmp_path / "lists.json"
    src.write_text(json.dumps(lists))
    out = tmp_path / "filters.scf"
    r = subprocess.run([str(TOOL), "compile", "--json", str(src), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def test_every_thread_runs_under_its_filter(ember_bin, scratch):
    vm = Ember.start(ember_bin, scratch)
    try:
        # Before InstanceStart the VMM thread is unfiltered (it opens what the API configures,
        # as Firecracker's); the API side and the opener are filtered from the start. (The API
        # thread is libmicrohttpd's "MHD-single" until its first request names it fc_api.) The
        # socket listens before those threads start (a client waits in the backlog), so the
        # socket being up does not mean the threads are: wait for them.
        wait_threads(vm.proc.pid, {"MHD-single", "fc_api_accept", "ember_opener"})
        assert vm.get("/").status_code == 200
        pre = by_name(vm.proc.pid)
        assert pre["fc_vmm"] == (0, 0), pre
        for name in ("fc_api", "fc_api_accept", "ember_opener"):
            assert pre[name] == (2, 1), pre
        boot_probe(vm, vcpus=2)
        wait_threads(vm.proc.pid, {"fc_vcpu 0", "fc_vcpu 1"})
        # each installs its own as it starts (a vCPU before its first KVM_RUN): wait for all
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            all_threads = threads(vm.proc.pid)
            if all((mode, n) == (2, 1) for _, mode, n in all_threads.values()):
                break
            time.sleep(0.05)
        assert len(all_threads) == 6, sorted(all_threads.values())
        for name, mode, n in all_threads.values():
            assert (mode, n) == (2, 1), (name, all_threads)
        assert vm.get("/").json()["state"] == "Running"
    finally:
        vm.close()


def test_no_seccomp_installs_nothing(ember_bin, scratch):
    vm = Ember.start(ember_bin, scratch, "--no-seccomp")
    try:
        boot_probe(vm, vcpus=1)
        wait_threads(vm.proc.pid, {"fc_vcpu 0"})
        time.sleep(0.2)
        all_threads = threads(vm.proc.pid)
        assert all(mode == 0 and n == 0 for _, mode, n in all_threads.values()), all_threads
        assert "ember_opener" not in by_name(vm.proc.pid)
        assert "--no-seccomp: no seccomp filter is installed" in vm.output()
    finally:
        vm.close()


def trigger_api(vm):
    try:  # the API thread answers with sendmsg (header + body): the first response kills
        vm.get("/", timeout=10)
    except Exception:  # the connection dies with the process
        pass


def trigger_boot(vm):
    try:
        boot_probe(vm, vcpus=1)
    except Exception:  # the process may die before InstanceStart's answer is out
        pass


# (role, syscall left out, thread that makes it, extra flags, what makes that path run)
BAD_SYSCALL_CASES = {
    "api": ("api", "sendmsg", "fc_api", (), trigger_api),
    # the event loop's first syscall once its filter is in
    "vmm": ("vmm", "epoll_wait", "fc_vmm", (), trigger_boot),
    # the probe writes 123 to the boot timer; the vCPU logs Guest-boot-time, and a log line
    # asks for the thread's name (prctl PR_GET_NAME)
    "vcpu": ("vcpu", "prctl", "fc_vcpu 0", ("--boot-timer",), trigger_boot),
}


@pytest.mark.parametrize("case", sorted(BAD_SYSCALL_CASES))
def test_syscall_left_out_exits_148(ember_bin, scratch, tmp_path, case):
    role, syscall, thread, extra, trigger = BAD_SYSCALL_CASES[case]
    metrics = tmp_path / "metrics.json"
    scf = filter_file(tmp_path, drop=(role, syscall))
    vm = Ember.start(ember_bin, scratch, "--seccomp-filter", scf, "--metrics-path", metrics,
                     *extra)
    try:
        trigger(vm)
        code = vm.wait(60)
        out = vm.output()
        assert code == 148, (code, out)
        assert (f"Shutting down VM after intercepting a bad syscall ("
                f"{syscall_nr(syscall)}: {syscall}) on thread {thread} (seccomp role {role})."
                in out), out
        lines = [json.loads(x) for x in metrics.read_text().splitlines()]
        assert lines[-1]["seccomp"]["num_faults"] == 1, lines[-1]
    finally:
        vm.close()


def syscall_nr(name):
    return {"sendmsg": 46, "epoll_wait": 232, "prctl": 157}[name]


def test_default_filters_boot_and_reset_the_probe(ember_bin, scratch, tmp_path):
    metrics = tmp_path / "metrics.json"
    vm = Ember.start(ember_bin, scratch, "--metrics-path", metrics, "--boot-timer")
    try:
        boot_probe(vm, cmdline="h", vcpus=2)
        assert vm.wait(60) == 0, vm.output()
        out = vm.output()
        assert "Guest-boot-time" in out and "bad syscall" not in out, out
        last = json.loads(metrics.read_text().splitlines()[-1])
        assert last["seccomp"] == {"num_faults": 0, "filtered_threads": 6}, last
    finally:
        vm.close()


def test_patch_drive_after_boot_goes_through_the_opener(ember_bin, scratch, tmp_path):
    d1, d2 = tmp_path / "d1.img", tmp_path / "d2.img"
    for d in (d1, d2):
        d.write_bytes(b"\0" * 65536)
    vm = Ember.start(ember_bin, scratch)
    try:
        boot_probe(vm, vcpus=1, drive=d1)
        wait_threads(vm.proc.pid, {"fc_vcpu 0"})
        r = vm.patch("/drives/d1", json={"drive_id": "d1", "path_on_host": str(d2)})
        assert r.status_code == 204, r.text
        assert vm.get("/vm/config").json()["drives"][0]["path_on_host"] == str(d2)
        # a device node is refused by the opener (no /dev/kvm or /dev/userfaultfd again)
        r = vm.patch("/drives/d1", json={"drive_id": "d1", "path_on_host": "/dev/null"})
        assert r.status_code == 400 and "cannot be opened" in fault(r), r.text
        r = vm.patch("/drives/d1", json={"drive_id": "d1", "path_on_host": str(tmp_path / "no")})
        assert r.status_code == 400 and "No such file" in fault(r), r.text
        assert vm.proc.poll() is None and by_name(vm.proc.pid)["fc_vmm"] == (2, 1)
    finally:
        vm.close()


def start_fails(ember_bin, scratch, *extra):
    sock = scratch / "api.sock"
    r = subprocess.run([str(ember_bin), "--api-sock", str(sock), *map(str, extra)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert not sock.exists()
    return r


def builtin_file(tmp_path):
    out = tmp_path / "builtin.scf"
    subprocess.run([str(TOOL), "compile", "-o", str(out)], check=True)
    return out.read_bytes()


def bad_files(tmp_path):
    data = builtin_file(tmp_path)
    first_len = struct.unpack_from("<I", data, 24 + 16)[0]
    # the file without its last program (and a header that says 4)
    off, progs = 24, []
    for _ in range(5):
        n = struct.unpack_from("<I", data, off + 16)[0]
        progs.append(data[off:off + 24 + 8 * n])
        off += 24 + 8 * n
    four = data[:16] + struct.pack("<I", 4) + data[20:24] + b"".join(progs[:4])
    long_count = bytearray(data)
    struct.pack_into("<I", long_count, 24 + 16, 5000)
    jump = bytearray(data)
    struct.pack_into("<HBBI", jump, 24 + 24, 0x15, 250, 250, 0)  # JEQ past the end
    return {
        "empty": (b"", "not an ember seccomp filter file"),
        "garbage": (b"\x7fELF" + b"\0" * 60, "not an ember seccomp filter file"),
        "truncated": (data[:24 + 24 + 8 * (first_len // 2)], "the file ends inside program 0"),
        "no-opener": (four, "no program for role opener"),
        "too-long-program": (bytes(long_count), "5000 instructions (1 to 4096"),
        "too-long-file": (data + b"\0" * 200000, "the file is too long"),
        "trailing": (data + b"\0" * 8, "8 bytes after the last program"),
        "bad-jump": (bytes(jump), "jump past the end"),
    }


@pytest.mark.parametrize("case", ["empty", "garbage", "truncated", "no-opener",
                                  "too-long-program", "too-long-file", "trailing", "bad-jump",
                                  "missing"])
def test_bad_filter_file_is_one_line_error(ember_bin, scratch, tmp_path, case):
    path = tmp_path / f"{case}.scf"
    if case == "missing":
        expect = "No such file or directory"
    else:
        data, expect = bad_files(tmp_path)[case]
        path.write_bytes(data)
    r = start_fails(ember_bin, scratch, "--seccomp-filter", path)
    assert r.returncode == 1, r
    errors = [line for line in (r.stdout + r.stderr).splitlines() if "--seccomp-filter" in line]
    assert len(errors) == 1 and expect in errors[0], r.stdout + r.stderr


def test_tool_refuses_a_json_list_without_a_role(tmp_path):
    src = tmp_path / "l.json"
    src.write_text(json.dumps({"api": ["read"], "vmm": ["read"]}))
    r = subprocess.run([str(TOOL), "compile", "--json", str(src), "-o", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "no list for role accept" in r.stderr, r.stderr
    src.write_text(json.dumps({"api": ["no_such_call"], "accept": ["read"], "vmm": ["read"],
                               "vcpu": ["read"], "opener": ["read"]}))
    r = subprocess.run([str(TOOL), "compile", "--json", str(src), "-o", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and 'unknown syscall "no_such_call"' in r.stderr, r.stderr


def test_sandbox_warning_and_strict_sandbox(ember_bin, scratch):
    # These tests run as root with every capability and without the jailer.
    r = start_fails(ember_bin, scratch, "--strict-sandbox")
    assert r.returncode == 1, r
    assert "--strict-sandbox: refusing to start: runs as root with capabilities" in r.stdout, r
    assert "not started by ember-jailer" in r.stdout, r
    vm = Ember.start(ember_bin, scratch)
    try:
        assert "ember is not sandboxed: runs as root with capabilities" in vm.output()
    finally:
        vm.close()


def test_security_md_lists_are_the_codes():
    doc = (REPO / "SECURITY.md").read_text()
    begin, end = "<!-- ember-seccomp print --markdown: begin -->\n", "<!-- end -->"
    assert begin in doc, "SECURITY.md has no generated allow-lists section"
    section = doc.split(begin, 1)[1].split(end, 1)[0]
    printed = subprocess.run([str(TOOL), "print", "--markdown"], check=True,
                             capture_output=True, text=True).stdout
    assert section == printed, "SECURITY.md's allow-lists differ from the code: make seccomp-doc"
