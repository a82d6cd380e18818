"""sha256_file and sha256_files against hashlib: sizes around buffer boundaries, byte ranges,
order and threads, and clear errors for missing or unreadable paths."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrun import _core


def _hex(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blob(n: int, seed: int = 0) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "little")).digest(n) if n else b""


@pytest.mark.parametrize(
    "size", [0, 1, 55, 56, 64, 4095, 4096, 65_537, 1 << 20, (1 << 20) + 1, 3 * (1 << 20) + 7]
)
def test_sha256_file_equals_hashlib(tmp_path: Path, size: int) -> None:
    data = _blob(size, size)
    p = tmp_path / "f"
    p.write_bytes(data)
    assert _core.sha256_file(str(p)) == _hex(data)


def test_empty_file_digest(tmp_path: Path) -> None:
    (tmp_path / "e").write_bytes(b"")
    assert _core.sha256_file(str(tmp_path / "e")) == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


RANGE_BLOB = _blob(200_000, 3)


@pytest.fixture(scope="module")
def range_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    p = tmp_path_factory.mktemp("digest") / "range"
    p.write_bytes(RANGE_BLOB)
    return str(p)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_sha256_file_ranges(range_file: str, data: st.DataObject) -> None:
    blob = RANGE_BLOB
    offset = data.draw(st.integers(0, len(blob)), label="offset")
    length = data.draw(st.none() | st.integers(0, len(blob) - offset), label="length")
    want = blob[offset:] if length is None else blob[offset : offset + length]
    assert _core.sha256_file(range_file, offset, length) == _hex(want)
    assert _core.sha256_file(range_file, offset=offset, length=length) == _hex(want)


def test_range_of_a_big_file(tmp_path: Path) -> None:
    data = _blob(5 << 20, 9)
    p = tmp_path / "big"
    p.write_bytes(data)
    off, n = (1 << 20) + 3, (2 << 20) + 11
    assert _core.sha256_file(str(p), off, n) == _hex(data[off : off + n])
    assert _core.sha256_file(str(p), len(data)) == _hex(b"")


@pytest.mark.parametrize("threads", [0, 1, 2, 7, 64])
def test_sha256_files_order_and_threads(tmp_path: Path, threads: int) -> None:
    paths, want = [], []
    for i, size in enumerate([0, 1, 1000, 1 << 20, 5, 300_000, 0, 70_000] * 5):
        data = _blob(size, i)
        p = tmp_path / f"f{i}"
        p.write_bytes(data)
        paths.append(str(p))
        want.append(_hex(data))
    paths += paths[:3]  # duplicates keep their places
    want += want[:3]
    assert _core.sha256_files(paths, threads) == want
    assert _core.sha256_files(list(reversed(paths)), threads=threads) == want[::-1]


def test_sha256_files_empty_list() -> None:
    assert _core.sha256_files([]) == []


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as ei:
        _core.sha256_file(str(tmp_path / "missing"))
    assert "missing" in str(ei.value)


def test_missing_file_in_batch_raises_file_not_found(tmp_path: Path) -> None:
    (tmp_path / "ok").write_bytes(b"ok")
    with pytest.raises(FileNotFoundError):
        _core.sha256_files([str(tmp_path / "ok"), str(tmp_path / "missing")], threads=2)


def test_directory_raises_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        _core.sha256_file(str(tmp_path))


def test_range_past_end_is_not_a_panic(tmp_path: Path) -> None:
    """A range past the end of the file: a short digest or an OSError/ValueError, not a panic."""
    p = tmp_path / "short"
    p.write_bytes(b"0123456789")
    try:
        got = _core.sha256_file(str(p), 5, 100)
    except (OSError, ValueError):
        return
    assert got == _hex(b"56789")
