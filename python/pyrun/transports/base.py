"""The transport interface: a source yields `SourceImage`s whose blobs are byte ranges of local
files; a destination accepts layers, configs and manifests."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from pyrun.reference import Reference


@dataclass
class Blob:
    """A blob's bytes: `length` bytes of `path` from `offset` (the whole file if None)."""

    path: str
    offset: int = 0
    length: int | None = None

    def size(self) -> int:
        return self.length if self.length is not None else os.path.getsize(self.path) - self.offset

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read(self.length if self.length is not None else -1)

    def open(self) -> BinaryIO:
        """A file object over just this blob's bytes."""
        f = open(self.path, "rb")  # noqa: SIM115 - returned to the caller
        f.seek(self.offset)
        if self.length is None:
            return f
        return _Window(f, self.length)  # type: ignore[return-value]

    def head(self, n: int = 16) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read(min(n, self.size()))


class _Window(io.RawIOBase):
    def __init__(self, f: BinaryIO, length: int) -> None:
        self._f = f
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._left)
        if n <= 0:
            return 0
        data = self._f.read(n)
        b[: len(data)] = data
        self._left -= len(data)
        return len(data)

    def close(self) -> None:
        self._f.close()
        super().close()


@dataclass
class SourceLayer:
    """A layer as a source offers it. `descriptor` is None when the source cannot know the
    digest before the bytes are read (a rootfs tar): the destination computes it."""

    blob: Blob
    descriptor: dict[str, Any] | None
    diff_id: str | None


@dataclass
class LayerResult:
    """What a destination knows of a layer after writing it."""

    digest: str
    diff_id: str
    size: int
    media_type: str


@dataclass
class SourceImage:
    manifest: bytes | None
    media_type: str
    config: bytes | None
    layers: list[SourceLayer]
    names: list[Reference] = field(default_factory=list)
    # For sources whose manifest depends on what the copy computed (rootfs import):
    finalize: Callable[[list[LayerResult]], tuple[bytes, bytes]] | None = None


class ImageSource(Protocol):
    def images(self, ref: str | None = None) -> list[SourceImage]:
        """Every image the source holds, or the one `ref` names (ImageNotFound if none)."""
        ...

    def close(self) -> None: ...


class ImageDestination(Protocol):
    def has_layer(self, descriptor: dict[str, Any], diff_id: str | None) -> bool: ...

    def put_layer(self, layer: SourceLayer) -> LayerResult: ...

    def put_blob(self, data: bytes, digest: str, media_type: str) -> None: ...

    def put_manifest(self, data: bytes, media_type: str, names: list[Reference]) -> str:
        """Store the manifest; returns its digest."""
        ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...
