"""Shared fixtures: temporary store roots, the CLI as a subprocess and the test images.
Markers (needs_root, needs_docker, needs_tool) live in helpers.py."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import PyrunRunner, mounts_under
from pyrun.client import Client
from pyrun.errors import PyrunError

LEAKED_MOUNTS: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if LEAKED_MOUNTS:
        terminalreporter.section("mounts left behind by tests (detached at teardown)")
        for target in LEAKED_MOUNTS:
            terminalreporter.line(target)


@pytest.fixture
def store_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "store"
    yield root
    # Detached containers outlive the CLI: take down whatever a test left running (monitors,
    # mounts, cgroups), so no test leaks into the next.
    if (root / "containers").is_dir():
        for c in Client(root).containers.list(all=True):
            with contextlib.suppress(PyrunError, OSError):
                c.remove(force=True)
    # Its networks too: bridges, firewall rules and namespace files are kernel-wide.
    from pyrun.store import Store

    if (root / "networks").is_dir():
        from pyrun.network import purge

        purge(Store(root))
    # And its containers' runtime directories on /run's tmpfs (what removals left: none).
    store = Store(root)
    if root.is_dir():
        store.sweep_run_root()
    with contextlib.suppress(OSError):
        store.run_root.rmdir()
    # Whatever is still mounted under the test's directory leaked: note it for the session's
    # summary and detach it, so pytest can remove the directory (a busy mount point there
    # would fail the whole run at exit).
    for target in mounts_under(tmp_path):
        LEAKED_MOUNTS.append(target)
        subprocess.run(["umount", "-l", target], capture_output=True)


@pytest.fixture(scope="session", autouse=True)
def _no_orphan_networks() -> Iterator[None]:
    """Stores made outside store_root (other tmp roots, the benchmark's scratch stores) may
    leave bridges and firewall rules behind when they are deleted: clean those up at the end."""
    yield
    from pyrun.network import purge_orphans
    from pyrun.store import RUN_TMPFS

    purge_orphans()
    # Those stores' (empty) runtime directory parents on /run's tmpfs.
    if RUN_TMPFS.is_dir():
        for d in RUN_TMPFS.iterdir():
            with contextlib.suppress(OSError):
                d.rmdir()


@pytest.fixture
def client(store_root: Path) -> Client:
    return Client(store_root)


@pytest.fixture
def pyrun(store_root: Path) -> PyrunRunner:
    """Run the CLI in a subprocess against the test's store: pyrun("images", "-q")."""

    def run(
        *args: str, input: str | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pyrun.cli", "--root", str(store_root), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )

    return run


@pytest.fixture(scope="session")
def busybox_tar() -> Path:
    from images import busybox_tar as build

    return build()


@pytest.fixture(scope="session")
def debian_tar() -> Path:
    from images import debian_tar as build

    return build()


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Path:
    """The busybox image unpacked once, as a template for runtime bundles."""
    from pyrun import _core

    root = tmp_path_factory.mktemp("busybox") / "rootfs"
    root.mkdir()
    _core.extract_layer(str(busybox_tar), str(root))
    return root


@pytest.fixture
def bundle(tmp_path: Path, busybox_rootfs: Path) -> Path:
    """An OCI bundle dir with a private copy of the busybox rootfs (config.json is the test's)."""
    import shutil

    b = tmp_path / "bundle"
    b.mkdir()
    shutil.copytree(busybox_rootfs, b / "rootfs", symlinks=True)
    return b


@pytest.fixture
def basic_registry(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """docker-registry with htpasswd auth; 2.8 provisions user `docker` and logs the password."""
    from test_registry import start_registry

    d = tmp_path / "basic"
    d.mkdir()
    gen = start_registry(d, f"auth: {{htpasswd: {{realm: basic-realm, path: {d}/htpasswd}}}}\n")
    host = next(gen)
    try:
        log = ""
        for _ in range(200):
            log = (d / "log").read_text()
            if "password=" in log:
                break
            time.sleep(0.05)
        m = re.search(r"password=(\S+) user=docker", log)
        assert m, log
        yield host, m.group(1)
    finally:
        gen.close()
