"""Markers and types shared by the test modules (import them from here, not from conftest:
benches/ has a conftest of its own and the name would be ambiguous)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root: mknod, chown and overlay mounts")

F = TypeVar("F", bound=Callable[..., None])


def root_test(fn: F) -> F:
    """Decorator form of needs_root that also adds the `root` marker (for -m selection)."""
    skip = pytest.mark.skipif(
        not IS_ROOT,
        reason="needs root: mknod, chown to other uids, trusted.* and security.* xattrs",
    )
    return pytest.mark.root(skip(fn))  # type: ignore[no-any-return]


@functools.cache
def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def needs_tool(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        shutil.which(name) is None, reason=f"needs {name} (ci/install-deps.sh installs it)"
    )


needs_docker = pytest.mark.skipif(
    not docker_available(),
    reason="needs the Docker engine: `docker info` failed or docker is missing",
)

PyrunRunner = Callable[..., subprocess.CompletedProcess[str]]


def until(cond: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll `cond()` until it is true (fails the test after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this mount namespace, deepest first."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].replace("\\040", " ")
            if target == prefix or target.startswith(prefix + "/"):
                found.append(target)
    return sorted(set(found), key=len, reverse=True)


def super_options(target: Path) -> list[str]:
    """The superblock options of the mount at `target` (mountinfo's last field)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == str(target):
                return fields[-1].split(",")
    raise AssertionError(f"{target} is not mounted")
