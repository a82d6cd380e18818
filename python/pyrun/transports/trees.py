"""Read-only file trees an image layout can sit in: a directory, or a tar archive read in place
(members are byte ranges of the tar, so layers are never copied out before unpacking)."""

from __future__ import annotations

import posixpath
import tarfile
from pathlib import Path
from typing import Protocol

from pyrun.errors import InvalidArchive
from pyrun.transports.base import Blob


class Tree(Protocol):
    label: str

    def exists(self, path: str) -> bool: ...

    def blob(self, path: str) -> Blob: ...


def read(tree: Tree, path: str) -> bytes:
    return tree.blob(path).read()


class DirTree:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.label = str(root)

    def _path(self, path: str) -> Path:
        clean = posixpath.normpath("/" + path).lstrip("/")
        return self.root / clean

    def exists(self, path: str) -> bool:
        return self._path(path).is_file()

    def blob(self, path: str) -> Blob:
        p = self._path(path)
        if not p.is_file():
            raise InvalidArchive(f"{self.label}: {path} is missing")
        return Blob(str(p))


class TarTree:
    """Index of a tar's regular members: name -> (offset, size). Symlinks and hardlinks between
    members (legacy `docker save` links duplicate layers) are followed inside the archive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = str(path)
        self._members: dict[str, tuple[int, int]] = {}
        links: dict[str, str] = {}
        try:
            with tarfile.open(path, "r:") as tf:
                for m in tf:
                    name = posixpath.normpath("/" + m.name).lstrip("/")
                    if m.isreg():
                        self._members[name] = (m.offset_data, m.size)
                    elif m.issym():
                        links[name] = posixpath.normpath(
                            posixpath.join(posixpath.dirname(name), m.linkname)
                        ).lstrip("/")
                    elif m.islnk():
                        links[name] = posixpath.normpath("/" + m.linkname).lstrip("/")
        except (tarfile.TarError, EOFError) as e:
            raise InvalidArchive(f"{path}: not a readable tar archive ({e})") from None
        except FileNotFoundError:
            raise InvalidArchive(f"{path}: no such file") from None
        except IsADirectoryError:
            raise InvalidArchive(f"{path}: is a directory, expected a tar archive") from None
        for name, target in links.items():
            for _ in range(8):
                if target in self._members:
                    self._members[name] = self._members[target]
                    break
                if target not in links:
                    break
                target = links[target]

    def exists(self, path: str) -> bool:
        return posixpath.normpath("/" + path).lstrip("/") in self._members

    def blob(self, path: str) -> Blob:
        key = posixpath.normpath("/" + path).lstrip("/")
        try:
            offset, size = self._members[key]
        except KeyError:
            raise InvalidArchive(f"{self.label}: archive has no member {path}") from None
        return Blob(str(self.path), offset, size)
