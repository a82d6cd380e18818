"""Shared fixtures: temporary store roots, the CLI as a subprocess, the test images, and skip
markers that say why (no root, no Docker engine, a peer tool missing)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pyrun.client import Client

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root: mknod, chown and overlay mounts")


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


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def client(store_root: Path) -> Client:
    return Client(store_root)


PyrunRunner = Callable[..., subprocess.CompletedProcess[str]]


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
