"""Crash-safe file primitives for the store: atomic writes (temp + fsync + rename) and flock."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temp(directory: Path) -> tuple[int, str]:
    """mkstemp's job without importing tempfile (and random, weakref: ~2 ms of a CLI start):
    a new file `.tmp-XXXXXXXXXXXX` (mode 0600) in `directory`, opened for writing."""
    for _ in range(100):
        tmp = os.path.join(directory, f".tmp-{os.urandom(6).hex()}")
        try:
            return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory}")


def atomic_write(
    path: Path,
    data: bytes,
    *,
    tmpdir: Path | None = None,
    mode: int = 0o644,
    durable: bool = True,
) -> None:
    """Write `data` to `path` so that readers (and a crash) see either the old file or the new
    one. `durable=False` skips the fsyncs: still atomic for readers and after a kill -9, for
    runtime files (a container's bundle and state) that a power loss may lose."""
    directory = tmpdir if tmpdir is not None else path.parent
    fd, tmp = _create_temp(directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def canonical_json(obj: Any) -> bytes:
    """The JSON encoding pyrun writes for manifests and configs it creates (stable bytes)."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=False, ensure_ascii=False).encode()


def atomic_write_json(
    path: Path, obj: Any, *, tmpdir: Path | None = None, durable: bool = True, pretty: bool = True
) -> None:
    """`pretty=False` writes compact JSON through the C encoder (indenting falls back to the
    pure-Python one: ~1 ms for a config.json with the seccomp profile)."""
    data = json.dumps(obj, indent=1, sort_keys=True) if pretty else json.dumps(obj)
    atomic_write(path, data.encode() + b"\n", tmpdir=tmpdir, durable=durable)


@contextlib.contextmanager
def flocked(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold an flock on `path` (created if needed) for the duration of the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Remove a file or directory tree, never following symlinks; missing is fine. In Rust,
    with the GIL released: about four times faster than shutil.rmtree on a container's tree."""
    from pyrun import _core

    _core.remove_tree(os.fspath(path))


def tree_size(path: Path) -> int:
    """Bytes a tree takes on disk (allocated blocks; hard links counted once)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, f))
                if st.st_nlink > 1:
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total
