"""A pytest run's progress, one JSON line per test start and end, for a suite that may outlive
the machine it runs on (tests/host/kvm-suite).

With EMBER_SUITE_PROGRESS=FILE, every test appends {"event": "start", ...} when it begins and
{"event": "end", "outcome": ..., "duration": ...} when its teardown is over; each line is
written and flushed on its own, so a file on the test host's uncached /tmp share says, after
the test host's kernel died, which test was running. A run started with the same FILE leaves
out the tests that have an "end" line there: a test-host death costs the test it interrupted,
not the suite. Without the variable nothing changes.

A guest whose vCPU the emulated host corrupted (the SIGUSR2 dump of a failing test shows the
test host's own state in it, tests/host/README.md) is no test's result either: the test's code
calls note_host_fault() (ember_vm.dump_vcpus does), and its end line then says "host-fault"
instead of "failed"; such a test runs once more in the next run with the same FILE, and a second
host fault is a failure.

A pytest plugin: `python3 -m pytest -p tests.integration.suite_progress ...` from the
repository (tests/host/kvm-suite loads it so).
"""
import json
import os
import time

_ENV = "EMBER_SUITE_PROGRESS"


def read(path):
    """The records of a progress file; a torn last line (a death mid-write) is left out."""
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and isinstance(rec.get("nodeid"), str):
                    records.append(rec)
    except FileNotFoundError:
        pass
    return records


def finished(records):
    """nodeid -> outcome of every test that has an end record (its last one)."""
    return {r["nodeid"]: r.get("outcome", "?") for r in records if r.get("event") == "end"}


def host_faults(records):
    """nodeid -> how many of its runs ended as "host-fault"."""
    n = {}
    for r in records:
        if r.get("event") == "end" and r.get("outcome") == "host-fault":
            n[r["nodeid"]] = n.get(r["nodeid"], 0) + 1
    return n


def to_rerun(records):
    """The tests whose one run so far ended in a host fault: they run once more."""
    done = finished(records)
    return {t for t, n in host_faults(records).items() if n == 1 and done.get(t) == "host-fault"}


def note_host_fault(detail):
    """Called by the running test: the emulated host corrupted its guest (detail: the evidence,
    one line). Without the variable nothing is recorded and the test fails as it would."""
    nodeid = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    if nodeid:
        _append({"event": "host-fault", "nodeid": nodeid, "pid": os.getpid(),
                 "detail": detail[:300]})


def _append(rec):
    path = os.environ.get(_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())


def pytest_configure(config):
    if os.environ.get(_ENV):
        config.pluginmanager.register(Recorder(), "ember_suite_progress_recorder")


def pytest_collection_modifyitems(config, items):
    """Leaves out the tests an earlier run with the same progress file finished."""
    path = os.environ.get(_ENV)
    if not path:
        return
    records = read(path)
    done = finished(records)
    for nodeid in to_rerun(records):
        done.pop(nodeid, None)
    if not done:
        return
    keep = [i for i in items if i.nodeid not in done]
    gone = [i for i in items if i.nodeid in done]
    if gone:
        config.hook.pytest_deselected(items=gone)
        items[:] = keep


class Recorder:
    """The pytest hooks: a start line per test, an end line with the worst phase's outcome."""

    def __init__(self):
        self._outcome = {}
        self._began = {}

    def pytest_runtest_logstart(self, nodeid, location):
        self._outcome[nodeid] = "passed"
        self._began[nodeid] = time.monotonic()
        _append({"event": "start", "nodeid": nodeid, "time": time.time()})

    def pytest_runtest_logreport(self, report):
        nodeid = report.nodeid
        if report.failed:
            self._outcome[nodeid] = "failed" if report.when == "call" else "error"
        elif report.skipped and self._outcome.get(nodeid) == "passed":
            self._outcome[nodeid] = "skipped"
        if report.when == "teardown":
            began = self._began.pop(nodeid, time.monotonic())
            outcome = self._outcome.pop(nodeid, "?")
            if outcome in ("failed", "error") and self._host_fault(nodeid):
                outcome = "host-fault"
            _append({"event": "end", "nodeid": nodeid, "outcome": outcome,
                     "duration": round(time.monotonic() - began, 1)})

    @staticmethod
    def _host_fault(nodeid):
        """Whether this process noted a host fault for the test (note_host_fault)."""
        return any(r.get("event") == "host-fault" and r["nodeid"] == nodeid and
                   r.get("pid") == os.getpid() for r in read(os.environ[_ENV]))
