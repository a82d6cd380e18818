"""Shared fixtures: temporary store roots, the CLI as a subprocess and the test images.
Markers (needs_root, needs_docker, needs_tool) live in helpers.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import PyrunRunner
from pyrun.client import Client


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


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
