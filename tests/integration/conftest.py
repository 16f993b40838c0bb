"""Shared fixtures for ember's integration tests.

Tests marked `kvm` boot real Linux guests. `make integration` runs them through
`tests/host/run --auto`: directly where /dev/kvm is hardware-backed, otherwise in the
nested test host (tests/host/README.md). Run by hand on a PVM machine they fail with a
hint rather than skip, so a missing KVM run is never mistaken for a pass.
"""
import os
import pathlib
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD = REPO / "build"
GUEST = BUILD / "guest"


def kvm_can_boot_linux():
    """True where a Linux guest can boot under /dev/kvm: in the test host, or on a host
    whose KVM is hardware-backed (kvm_intel / kvm_amd loaded)."""
    if os.environ.get("EMBER_IN_TESTHOST") == "1":
        return True
    return any(os.path.isdir(f"/sys/module/{m}") for m in ("kvm_intel", "kvm_amd"))


def pytest_collection_modifyitems(config, items):
    if kvm_can_boot_linux():
        return
    for item in items:
        if "kvm" in item.keywords:
            item.add_marker(pytest.mark.usefixtures("_kvm_required"))


@pytest.fixture
def _kvm_required():
    pytest.fail("this test needs a hardware-backed /dev/kvm; run it with "
                "`tests/host/run --auto -- python3 -m pytest -m kvm ...` (see tests/host/README.md)")


@pytest.fixture
def dev_kvm():
    """For tests that run a tiny probe guest, which any /dev/kvm runs (PVM too): fails with
    a hint where /dev/kvm is missing, never skips."""
    if not os.path.exists("/dev/kvm"):
        pytest.fail("this test needs /dev/kvm (any KVM, PVM included, runs its probe guest); "
                    "load kvm_intel, kvm_amd or kvm_pvm, or run it in the test host with "
                    "`tests/host/run --auto -- python3 -m pytest ...` (see tests/host/README.md)")
    return "/dev/kvm"


@pytest.fixture(scope="session")
def repo():
    return REPO


@pytest.fixture(scope="session")
def ember_bin():
    path = BUILD / "ember"
    assert path.exists(), "build/ember is missing: run `make` first"
    return path


@pytest.fixture(scope="session")
def guest_assets():
    """Paths of the guest kernel and root filesystems built by `make guest`."""
    assets = {
        "vmlinux": GUEST / "vmlinux",
        "bzImage": GUEST / "bzImage",
        "rootfs": GUEST / "rootfs.ext4",
        "initramfs": GUEST / "initramfs.cpio.gz",
    }
    for name, path in assets.items():
        assert path.exists(), f"{path} is missing: run `make guest` first"
    return assets


@pytest.fixture
def scratch():
    """A directory for Unix sockets and other special files.

    In the test host the repository and /tmp are 9p shares, where sockets cannot be
    created, so this is on a local tmpfs ($EMBER_SCRATCH) there."""
    base = os.environ.get("EMBER_SCRATCH") or None
    with tempfile.TemporaryDirectory(prefix="ember-", dir=base) as d:
        yield pathlib.Path(d)
