"""Fixtures for the benchmarks in benches/: the test images, from tests/images.py (which builds
them when missing; tests/ is put on sys.path for it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))


@pytest.fixture(scope="session")
def busybox_tar() -> Path:
    """The busybox rootfs tar (plain), built by ci/test-images.sh if missing."""
    import images

    try:
        path: Path = images.busybox_tar()
    except images.ImageUnavailable as e:
        pytest.skip(f"busybox test image unavailable: {e}")
    return path
